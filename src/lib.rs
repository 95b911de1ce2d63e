//! mparticle-forwarder: forwards loyalty events from Kafka to mParticle's
//! server-to-server Events API, with a delayed retry topic and a dead-letter topic.
//!
//! The data flows top to bottom: [`config`] → [`event`] → [`mapping`] → [`mparticle`] →
//! [`kafka`], driven by [`pipeline`]; [`app`] wires them and [`admin`] shows them to
//! operators. `standin` (feature `standin`, on for tests and benchmarks, off in the service's
//! build) is a local stand-in for mParticle used in development and tests.

#![deny(unsafe_code)]

pub mod accounts;
pub mod admin;
pub mod app;
pub mod clock;
pub mod config;
pub mod crash;
pub mod digest;
pub mod event;
pub mod gate;
pub mod http_server;
pub mod json;
pub mod kafka;
pub mod mapping;
pub mod metrics;
pub mod mparticle;
pub mod names;
pub mod outcome;
pub mod pacer;
pub mod pipeline;
pub mod random;
pub mod replay;
pub mod retry;
pub mod shutdown;
#[cfg(feature = "standin")]
pub mod standin;
pub mod telemetry;
