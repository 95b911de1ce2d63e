//! Black-box tests: the command line, the mParticle client against the stand-in, and the
//! whole service against a real Kafka broker (`scripts/kafka.sh start`; `MPF_TEST_KAFKA`
//! names another) and the stand-in.

mod accounts;
mod cli;
mod client;
mod consumer;
mod forwarding;
mod hostile;
mod hostile_records;
mod merging;
mod operations;
mod ordering;
mod pacing;
mod resilience;
mod retries;
mod support;
