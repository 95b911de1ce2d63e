//! The running side of each account: its Events API client, its pacer and its delivery
//! gate, its request slots, and how many of its records are between intake and outcome.
//! One account's refused key, outage or rate limit stops only its own requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::{AccountId, AccountsConfig, Routing};
use crate::gate::{Gate, Reason};
use crate::mapping::FieldAssignments;
use crate::mparticle::Environment;
use crate::mparticle::client::{Client, http_client};
use crate::pacer::Pacer;

/// One account, running.
pub struct Account {
    pub id: AccountId,
    /// Its name, kept once for the process (a metric label).
    pub name: &'static str,
    pub client: Client,
    pub pacer: Pacer,
    pub gate: Gate,
    pub environment: Environment,
    pub assignments: Arc<FieldAssignments>,
    /// Its requests under way, `MPARTICLE_MAX_IN_FLIGHT_REQUESTS` at most.
    pub request_slots: Arc<Semaphore>,
    /// Its records between intake and outcome.
    records: AtomicI64,
}

/// An account is behind its pace when its limit binds ([`Pacer::limited`]: mParticle's
/// 429s or its configured cap) and the records it holds would take longer than this to
/// leave at the rate its pacer allows now.
pub const BEHIND_AFTER: Duration = Duration::from_secs(2);

/// Why an account cannot keep up now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// Its gate is not closed: credentials refused, or an outage.
    Gate(Reason),
    /// mParticle holds it with `Retry-After`, or it is behind its pace ([`BEHIND_AFTER`]).
    RateLimited,
}

impl Stuck {
    pub fn as_str(self) -> &'static str {
        match self {
            Stuck::Gate(Reason::Auth) => "auth_failed",
            Stuck::Gate(Reason::Outage) => "outage",
            Stuck::RateLimited => "rate_limited",
        }
    }
}

impl Account {
    pub fn records_add(&self, delta: i64) {
        self.records.fetch_add(delta, Ordering::Relaxed);
    }

    /// Its records between intake and outcome.
    pub fn records(&self) -> i64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Why the account cannot keep up now, and about how long that lasts, if it cannot.
    pub fn stuck(&self) -> Option<(Stuck, Duration)> {
        if let Some((reason, wait)) = self.gate.stopped() {
            return Some((Stuck::Gate(reason), wait));
        }
        if let Some(held) = self.pacer.held_for() {
            return Some((Stuck::RateLimited, held));
        }
        if !self.pacer.limited() {
            return None;
        }
        let drain = self.records().max(0) as f64 / self.pacer.rate().max(f64::MIN_POSITIVE);
        (drain > BEHIND_AFTER.as_secs_f64()).then(|| {
            (
                Stuck::RateLimited,
                Duration::from_secs_f64(drain.min(3600.0)),
            )
        })
    }
}

/// Every account, and the rule that routes records among them.
pub struct Accounts {
    list: Vec<Account>,
    routing: Routing,
    /// Every gate tells its changes here.
    gate_changes: watch::Sender<u64>,
    /// Requests on the wire, of every account together ([`WIRE_SHARE`] accounts' worth of
    /// request slots): a hundred accounts' slots at once overran the connections.
    wire: Arc<Semaphore>,
}

/// The process keeps this many accounts' worth of `MPARTICLE_MAX_IN_FLIGHT_REQUESTS` on
/// the wire at once, so that one account's slow requests take at most a quarter of it.
pub const WIRE_SHARE: usize = 4;

impl Accounts {
    pub fn new(config: &AccountsConfig) -> anyhow::Result<Accounts> {
        let gate_changes = watch::channel(0).0;
        // The timeouts and request settings are the process's, the same in every account.
        let process = &config.accounts[0].mparticle;
        let wire = process.max_in_flight_requests * WIRE_SHARE.min(config.accounts.len());
        let http = http_client(process, wire)?;
        let mut list = Vec::with_capacity(config.accounts.len());
        for (id, settings) in config.accounts.iter().enumerate() {
            let mparticle = &settings.mparticle;
            list.push(Account {
                id,
                name: crate::names::intern(&settings.name),
                client: Client::sharing(mparticle, http.clone()).map_err(|e| {
                    anyhow::anyhow!("account {}: cannot build its client: {e}", settings.name)
                })?,
                pacer: Pacer::new(mparticle.max_batches_per_second),
                gate: Gate::telling(gate_changes.clone()),
                environment: Environment::from_development_flag(mparticle.development),
                assignments: settings.assignments.clone(),
                request_slots: Arc::new(Semaphore::new(mparticle.max_in_flight_requests)),
                records: AtomicI64::new(0),
            });
        }
        Ok(Accounts {
            list,
            routing: config.routing.clone(),
            gate_changes,
            wire: Arc::new(Semaphore::new(wire)),
        })
    }

    /// Room for one more request on the wire, of any account.
    pub fn wire(&self) -> Arc<Semaphore> {
        self.wire.clone()
    }

    pub fn get(&self, id: AccountId) -> &Account {
        &self.list[id]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Several accounts share the process: one that cannot send must not hold the
    /// others' records back.
    pub fn are_shared(&self) -> bool {
        self.list.len() > 1
    }

    /// Whether the consumers pause: every account's gate holds them (with one account,
    /// its gate; with several, a stopped one leaves the others reading).
    pub fn hold_consumers(&self) -> bool {
        self.list.iter().all(|a| a.gate.holds_consumers())
    }

    /// When the first open gate's wait ends.
    pub fn gate_wait_ends_at(&self) -> Option<Instant> {
        self.list.iter().filter_map(|a| a.gate.wait_ends_at()).min()
    }

    /// Resolves at the next change of any gate.
    pub fn subscribe_gates(&self) -> watch::Receiver<u64> {
        self.gate_changes.subscribe()
    }

    /// Whether every account's credentials are refused: the process can deliver nothing.
    pub fn auth_failed_everywhere(&self) -> bool {
        self.list.iter().all(|a| a.gate.auth_failed())
    }

    /// Each account's state for `/accounts`, one JSON object per account.
    pub fn report(&self) -> String {
        let list: Vec<serde_json::Value> = self
            .list
            .iter()
            .map(|account| {
                let stuck = account.stuck().map(|(stuck, _)| stuck.as_str());
                serde_json::json!({
                    "account": account.name,
                    "state": stuck.unwrap_or("sending"),
                    "pacing_rate_batches_per_second": (account.pacer.rate() * 10.0).round() / 10.0,
                    "records_in_flight": account.records(),
                })
            })
            .collect();
        serde_json::Value::Array(list).to_string()
    }

    /// Whether some account's credentials are refused.
    pub fn auth_failed_anywhere(&self) -> bool {
        self.list.iter().any(|a| a.gate.auth_failed())
    }
}
