//! The `mparticle-forwarder` command: `run` (the default), `check-config`, `map`,
//! `replay-dlq`.

#![deny(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mparticle_forwarder::app::{self, App, EXIT_BAD_CONFIG, Settings};
use mparticle_forwarder::config::{
    Config, DEFAULT_FIELD_ASSIGNMENTS_FILE, FIELD_ASSIGNMENTS_FILE, MPARTICLE_API_KEY,
    MPARTICLE_API_SECRET, MPARTICLE_DEVELOPMENT,
};
use mparticle_forwarder::event::LoyaltyEvent;
use mparticle_forwarder::mapping::FieldAssignments;
use mparticle_forwarder::mparticle::Environment;
use mparticle_forwarder::replay::{self, ReplayFilter};
use mparticle_forwarder::telemetry;

/// mimalloc instead of glibc's malloc: the pipeline allocates many small, short-lived
/// buffers across threads (librdkafka's and tokio's); measured in BENCHMARKS.md. The
/// image sets `MIMALLOC_ARENA_EAGER_COMMIT=0` (deploy/Dockerfile): committing the arena as
/// it is used keeps the peak RSS lower where the kernel overcommits.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for input that is not a mappable loyalty event (EX_DATAERR).
const EXIT_BAD_INPUT: u8 = 65;

#[derive(Parser)]
#[command(
    name = "mparticle-forwarder",
    version,
    about = "Forwards loyalty events from Kafka to mParticle's Events API.\nConfiguration comes from the environment; see the README."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Run,
    /// Check the environment and the field assignments and print what the service would do.
    CheckConfig,
    /// Print the mParticle batch for one loyalty event read from standard input.
    Map {
        /// The field-assignments file (default: FIELD_ASSIGNMENTS_FILE, else config/field-assignments.toml).
        #[arg(long)]
        field_assignments: Option<PathBuf>,
        /// Send "environment": "development" (default: MPARTICLE_DEVELOPMENT).
        #[arg(long)]
        development: bool,
    },
    /// Republish dead letters to the topic they were first consumed from. Kafka settings come
    /// from the environment, as for `run`.
    ReplayDlq {
        /// Only this forwarder-error-kind (repeatable), e.g. attempts_exhausted, http_4xx.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only events with this action (repeatable).
        #[arg(long = "action")]
        actions: Vec<String>,
        /// Only dead letters written at or after this time: RFC 3339, unix ms, or a duration ago (2h).
        #[arg(long)]
        since: Option<String>,
        /// Only dead letters written before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Leave records that were replayed this many times already.
        #[arg(long, default_value_t = 3)]
        max_replays: u32,
        /// List what would be replayed; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Send the replayed events with their user attributes. By default they go
        /// without: the customer's later records have set newer values since.
        #[arg(long)]
        with_attributes: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(),
        Command::CheckConfig => check_config(),
        Command::Map {
            field_assignments,
            development,
        } => map(field_assignments, development),
        Command::ReplayDlq {
            kinds,
            actions,
            since,
            until,
            max_replays,
            dry_run,
            with_attributes,
        } => {
            let (since_ms, until_ms) =
                match (parse_time("--since", since), parse_time("--until", until)) {
                    (Ok(since), Ok(until)) => (since, until),
                    (Err(message), _) | (_, Err(message)) => {
                        eprintln!("{message}");
                        return ExitCode::from(EXIT_BAD_CONFIG);
                    }
                };
            let filter = ReplayFilter {
                kinds,
                actions,
                since_ms,
                until_ms,
                max_replays,
                with_attributes,
            };
            replay_dlq(filter, dry_run)
        }
    }
}

/// RFC 3339, unix milliseconds, or a duration before now.
fn parse_time(flag: &str, text: Option<String>) -> Result<Option<i64>, String> {
    let Some(text) = text else {
        return Ok(None);
    };
    let text = text.trim();
    if let Some(ms) = mparticle_forwarder::event::parse_rfc3339_ms(text) {
        return Ok(Some(ms));
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(Some(ms));
    }
    if let Some(ago) = mparticle_forwarder::config::parse_duration(text) {
        return Ok(Some(
            mparticle_forwarder::clock::unix_ms() - ago.as_millis() as i64,
        ));
    }
    Err(format!(
        "{flag} {text:?}: give RFC 3339 (2026-11-28T12:00:00Z), unix ms, or a duration ago (2h)"
    ))
}

fn replay_dlq(filter: ReplayFilter, dry_run: bool) -> ExitCode {
    // Replaying needs Kafka only; the mParticle credentials may be absent here.
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    for name in [MPARTICLE_API_KEY, MPARTICLE_API_SECRET] {
        if !vars.iter().any(|(k, v)| k == name && !v.trim().is_empty()) {
            vars.push((name.to_string(), "not-needed-for-replay".to_string()));
        }
    }
    let config = match Config::from_vars(vars) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!(
                "mparticle-forwarder: the configuration has {} problem(s):\n{problems}",
                problems.0.len()
            );
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    telemetry::init(config.log_format);
    let runtime = match runtime(config.worker_threads) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(replay::run(&config.kafka, &filter, dry_run, &mut stdout)) {
        Ok(report) => {
            let replayed: usize = report.replayed.values().sum();
            println!(
                "{} {replayed} of {} dead letters{}; {} filtered out, {} left after {} replays, {} of unknown origin, {} shortened (not replayable)",
                if dry_run { "would replay" } else { "replayed" },
                report.examined,
                report
                    .replayed
                    .iter()
                    .map(|(topic, n)| format!(" ({n} to {topic})"))
                    .collect::<String>(),
                report.filtered,
                report.loop_guarded,
                filter.max_replays,
                report.no_origin,
                report.shortened,
            );
            if report.failed > 0 {
                eprintln!(
                    "mparticle-forwarder: {} replays not acknowledged (they stay in the dead-letter topic; run again): {}",
                    report.failed,
                    report.first_failure.as_deref().unwrap_or("?")
                );
            }
            if let Some(why) = &report.stopped {
                eprintln!("mparticle-forwarder: replay stopped before the end: {why}");
            }
            if report.is_complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(app::EXIT_FATAL)
            }
        }
        Err(error) => {
            eprintln!("mparticle-forwarder: replay failed: {error:#}");
            ExitCode::from(app::EXIT_FATAL)
        }
    }
}

fn load_or_report() -> Result<Settings, ExitCode> {
    Settings::load(std::env::vars()).map_err(|problems| {
        eprintln!(
            "mparticle-forwarder: the configuration has {} problem(s):\n{problems}",
            problems.0.len()
        );
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

fn runtime(worker_threads: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("mparticle-forwarder: cannot start the runtime: {error}");
            ExitCode::from(app::EXIT_FATAL)
        })
}

fn run() -> ExitCode {
    let settings = match load_or_report() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    telemetry::init(settings.config.log_format);
    let runtime = match runtime(settings.config.worker_threads) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    mparticle_forwarder::crash::exit_on_panic();
    let code = runtime.block_on(async {
        let app = match App::build(settings).await {
            Ok(app) => app,
            Err(error) => {
                tracing::error!("cannot start: {error:#}");
                return ExitCode::from(app::EXIT_FATAL);
            }
        };
        app.shutdown_handle().listen_for_signals();
        let reason = app.run().await;
        match &reason {
            mparticle_forwarder::shutdown::StopReason::Fatal(why) => {
                tracing::error!("stopped: {why}")
            }
            other => tracing::info!(reason = ?other, "stopped"),
        }
        ExitCode::from(app::exit_code(&reason))
    });
    // Whatever still runs on a blocking thread (a client librdkafka cannot close) must not
    // keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

fn check_config() -> ExitCode {
    let settings = match load_or_report() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let c = &settings.config;
    println!("configuration is valid\n");
    let accounts = &settings.accounts;
    if let Some(file) = &accounts.file {
        println!(
            "mParticle accounts ({}): {}",
            file.display(),
            accounts.accounts.len()
        );
        println!("  routing:             {}", accounts.routing);
    } else {
        println!("mParticle");
    }
    for account in &accounts.accounts {
        let m = &account.mparticle;
        if accounts.file.is_some() {
            println!("  account {}", account.name);
        }
        println!(
            "  events URL:          {}",
            mparticle_forwarder::config::masked_url(&m.events_url)
        );
        if m.credentials_in_clear() {
            println!(
                "  warning:             {}",
                mparticle_forwarder::config::CLEAR_CREDENTIALS_WARNING
            );
        }
        println!(
            "  bulk URL:            {}",
            mparticle_forwarder::config::masked_url(&m.bulk_url)
        );
        println!("  API key / secret:    {} / {}", m.api_key, m.api_secret);
        println!(
            "  environment:         {}",
            Environment::from_development_flag(m.development).as_str()
        );
        println!(
            "  rate:                {}",
            m.max_batches_per_second
                .map_or("learnt from mParticle's answers".to_string(), |r| format!(
                    "learnt from mParticle's answers, at most {r} batches/s"
                ))
        );
        println!(
            "  field assignments:   {}",
            account.field_assignments_file.display()
        );
    }
    println!("  timeout:             {:?}", c.mparticle.timeout);
    println!(
        "  concurrent requests: {}",
        c.mparticle.max_in_flight_requests
    );
    println!("Kafka");
    println!("  bootstrap servers:   {}", c.kafka.bootstrap_servers);
    println!("  group:               {}", c.kafka.group_id);
    if let Some(instance) = &c.kafka.group_instance_id {
        println!("  static member:       {instance} (retry group: {instance}.retry)");
    }
    println!("  source topics:       {}", c.kafka.topics.join(", "));
    println!("  retry topic:         {}", c.kafka.retry_topic);
    println!("  dead-letter topic:   {}", c.kafka.dlq_topic);
    for (name, value) in &c.kafka.properties {
        let shown = match value {
            mparticle_forwarder::config::KafkaPropertyValue::Plain(v) => v.clone(),
            mparticle_forwarder::config::KafkaPropertyValue::Secret(s) => s.to_string(),
        };
        println!("  {name} = {shown}");
    }
    println!("Retries");
    println!("  attempts:            {}", c.retry.max_attempts);
    println!("  backoff:             {:?}", c.retry.backoff);
    println!("Records");
    println!("  unmapped actions:    {:?}", c.unmapped_action);
    println!("  largest record:      {} bytes", c.event_max_bytes);
    println!(
        "  in flight at most:   {} records, {} bytes",
        c.max_in_flight_records, c.max_in_flight_bytes
    );
    println!("Admin: {}   log format: {:?}", c.admin_addr, c.log_format);
    println!("Worker threads: {}", c.worker_threads);
    let mut described: Vec<&std::path::Path> = Vec::new();
    for account in &accounts.accounts {
        let file = account.field_assignments_file.as_path();
        if described.contains(&file) {
            continue;
        }
        described.push(file);
        println!("\nField assignments ({})", file.display());
        for line in account.assignments.describe().lines() {
            println!("  {line}");
        }
    }
    for (file, warning) in &accounts.warnings {
        println!("warning: {}: {warning}", file.display());
    }
    ExitCode::SUCCESS
}

fn map(file: Option<PathBuf>, development: bool) -> ExitCode {
    let path = file.unwrap_or_else(|| {
        let vars = std::env::vars().filter(|(k, _)| k == FIELD_ASSIGNMENTS_FILE);
        let path = Config::field_assignments_path_from_vars(vars);
        if path.as_os_str().is_empty() {
            PathBuf::from(DEFAULT_FIELD_ASSIGNMENTS_FILE)
        } else {
            path
        }
    });
    let assignments = match FieldAssignments::load(&path) {
        Ok((assignments, warnings)) => {
            for warning in warnings {
                eprintln!("warning: {}: {warning}", path.display());
            }
            assignments
        }
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let development = development
        || std::env::var(MPARTICLE_DEVELOPMENT)
            .is_ok_and(|v| matches!(v.trim(), "true" | "1" | "yes"));
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read standard input: {error}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let document = LoyaltyEvent::parse(Some(&input), usize::MAX);
    let read = LoyaltyEvent::decode(&document, assignments.paths());
    let event = match read {
        Ok(event) => event,
        Err(invalid) => {
            eprintln!("{}: {invalid}", invalid.kind());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    match assignments.map(
        &event,
        Environment::from_development_flag(development),
        None,
    ) {
        Ok(batch) => {
            let value: serde_json::Value = serde_json::from_slice(&batch.json).unwrap_or_default();
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", error.kind());
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}
