//! The loyalty events both benchmarks use: the two actions of the sample field
//! assignments, about 400 bytes each.

/// Fields upstream services add that the field assignments do not read.
const CONTEXT: &str = r#""context":{"source":"loyalty-engine","channel":"web","store":"budapest-01","ip":"203.0.113.7","agent":"Mozilla/5.0"}"#;

/// A loyalty event of about 400 bytes (380-430): the mapped fields and a `context` object
/// no assignment reads, as upstream services send. Without `created_at` the batch's
/// timestamp is the record's, which the latency run needs.
pub fn event(i: usize, with_created_at: bool) -> String {
    event_of(i, CUSTOMERS, with_created_at)
}

/// Customers the events are spread over: event `i` is customer `i % CUSTOMERS`'s.
pub const CUSTOMERS: usize = 100_000;

/// [`event`], of one of `customers` customers (`cust-{i % customers}`, the record's key).
pub fn event_of(i: usize, customers: usize, with_created_at: bool) -> String {
    let created = if with_created_at {
        r#""created_at":"2026-11-28T12:00:00Z","#
    } else {
        ""
    };
    if i % 2 == 0 {
        format!(
            r#"{{"id":"bench-{i:09}","action":"point_add",{created}"customer":{{"id":"cust-{c:06}","email":"member{c}@example.com","phone":"+3620{c:07}","first_name":"Ana","tier":"gold","spendable":49482,"score":49492}},"data":{{"points":{p},"reason":"purchase","account":"main"}},{CONTEXT}}}"#,
            c = i % customers,
            p = i % 1000
        )
    } else {
        format!(
            r#"{{"id":"bench-{i:09}","action":"reward_claim",{created}"customer":{{"id":"cust-{c:06}","email":"member{c}@example.com","tier":"silver"}},"data":{{"reward_id":"rw-{r:08x}","reward_name":"10% off Winter Collection","points_spent":500,"coupon":{{"code":"TC{r:05}","type":"single"}}}},{CONTEXT}}}"#,
            c = i % customers,
            r = i
        )
    }
}
