//! Kafka: client settings, the source consumer with its offset ledger, and the producer
//! that writes retry and dead-letter records.

pub mod consumer;
#[allow(unsafe_code)]
pub mod ffi;
pub mod follow;
pub mod headers;
pub mod offsets;
pub mod producer;
pub mod record;
pub mod retry_partitions;
pub mod settings;
pub mod shortened;
pub mod topic;
