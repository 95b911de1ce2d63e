//! `mparticle-standin`: a local stand-in for mParticle's Events API (see
//! `mparticle_forwarder::standin`). For development, tests and benchmarks; never for
//! production.

#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mparticle_forwarder::shutdown::Shutdown;
use mparticle_forwarder::standin::{StandIn, StandInAccount, StandInConfig};

#[derive(Parser)]
#[command(
    name = "mparticle-standin",
    version,
    about = "A local stand-in for mParticle's Events API."
)]
struct Args {
    /// Where to listen.
    #[arg(long, env = "STANDIN_ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The API key it accepts.
    #[arg(long, env = "STANDIN_API_KEY", default_value = "local-key")]
    api_key: String,
    /// The API secret it accepts.
    #[arg(
        long,
        env = "STANDIN_API_SECRET",
        default_value = "local-secret",
        hide_env_values = true
    )]
    api_secret: String,
    /// Append every accepted batch to this file as a JSON line.
    #[arg(long, env = "STANDIN_RECORD_FILE")]
    record_file: Option<PathBuf>,
    /// Benchmark mode: no contract checks, only counts, id hashes and latencies kept.
    #[arg(long)]
    fast: bool,
    /// Answer 429 above this many batches per second, over all connections together.
    #[arg(long, env = "STANDIN_RATE_LIMIT")]
    rate_limit: Option<f64>,
    /// `Retry-After` seconds on the rate limit's 429s; 0 sends none.
    #[arg(long, default_value_t = 1)]
    rate_limit_retry_after: u32,
    /// Send no `X-mp-rate-limit-percentage-used` on 2xx answers.
    #[arg(long)]
    no_usage_header: bool,
    /// Another account it serves, as `name:key:secret` (repeatable).
    #[arg(long = "account", value_parser = parse_account)]
    accounts: Vec<StandInAccount>,
}

fn parse_account(text: &str) -> Result<StandInAccount, String> {
    StandInAccount::parse(text).ok_or_else(|| "give the account as name:key:secret".to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    mparticle_forwarder::telemetry::init(mparticle_forwarder::config::LogFormat::Text);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mparticle-standin: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!(
                    "mparticle-standin: cannot listen on {}: {error}",
                    args.listen
                );
                return ExitCode::FAILURE;
            }
        };
        let config = StandInConfig {
            api_key: args.api_key,
            api_secret: args.api_secret,
            record_file: args.record_file,
            fast: args.fast,
            rate_limit: args.rate_limit,
            rate_limit_retry_after: (args.rate_limit_retry_after > 0)
                .then_some(args.rate_limit_retry_after),
            rate_limit_usage_header: !args.no_usage_header,
            accounts: args.accounts,
        };
        let standin = match StandIn::start(listener, config) {
            Ok(standin) => standin,
            Err(error) => {
                eprintln!("mparticle-standin: {error}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "mparticle-standin listening; MPARTICLE_API_URL={}",
            standin.events_url()
        );
        let shutdown = Shutdown::new();
        shutdown.listen_for_signals();
        shutdown.wait().await;
        standin.stop();
        ExitCode::SUCCESS
    })
}
