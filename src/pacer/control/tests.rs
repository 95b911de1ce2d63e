//! RateControl's tests: its rules one by one, and replicas sharing a simulated account
//! that counts a sliding second.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Sends at the rate for `for_ms`, asking for it every 10 ms, the rate binding
/// throughout.
fn run_binding(control: &mut RateControl, from: Instant, for_ms: u64) -> Instant {
    let mut now = from;
    let mut owed = 0.0;
    for _ in 0..for_ms / 10 {
        now += ms(10);
        control.bound(now);
        owed += control.rate(now) / 100.0;
        control.count_accepted(now, owed as usize);
        owed -= owed.floor();
    }
    now
}

#[test]
fn it_starts_at_the_ceiling_or_at_mparticles_default() {
    let now = Instant::now();
    assert_eq!(RateControl::new(None, now).rate(now), START_RATE);
    assert_eq!(RateControl::new(Some(20.0), now).rate(now), 20.0);
    assert_eq!(RateControl::new(Some(300.0), now).rate(now), START_RATE);
}

#[test]
fn without_a_signal_a_binding_rate_grows_and_an_idle_one_does_not() {
    let start = Instant::now();
    let mut control = RateControl::new(None, start);
    let later = start + Duration::from_secs(5);
    assert_eq!(control.rate(later), START_RATE, "idle: no growth");
    let end = run_binding(&mut control, later, 1_000);
    let grown = control.rate(end);
    assert!(
        grown > START_RATE * 6.5 && grown < START_RATE * 8.5,
        "{grown}"
    );
}

#[test]
fn the_ceiling_is_never_passed() {
    let start = Instant::now();
    let mut control = RateControl::new(Some(200.0), start);
    let end = run_binding(&mut control, start, 5_000);
    assert_eq!(control.rate(end), 200.0);
}

#[test]
fn a_429_cuts_once_per_round_of_requests_and_at_most_every_half_second() {
    let start = Instant::now();
    let mut control = RateControl::new(None, start);
    let refused = Signal::Refused(LimitHit::Account);
    control.observe(start + ms(50), start + ms(10), refused);
    let once = control.rate(start + ms(50));
    assert!(once < START_RATE * 0.8 && once > START_RATE * 0.7, "{once}");
    // Answers to requests sent before that cut were answers to the old rate.
    control.observe(start + ms(60), start + ms(20), refused);
    assert_eq!(control.rate(start + ms(60)), once);
    // Refusals go on while the account's second passes ...
    control.observe(start + ms(120), start + ms(70), refused);
    assert_eq!(control.rate(start + ms(120)), once);
    // ... a request sent after the cut and refused half a second later cuts again.
    control.observe(start + ms(600), start + ms(560), refused);
    assert!(control.rate(start + ms(600)) < once * 0.8);
}

#[test]
fn growth_slows_near_the_rate_last_refused_and_resumes_past_it() {
    let start = Instant::now();
    let mut control = RateControl::new(None, start);
    control.observe(start, start, Signal::Refused(LimitHit::Account));
    let cut = control.rate(start);
    // Fast back to about 90% of the refused rate (within a second), then slow.
    let now = run_binding(&mut control, start, 1_000);
    let near = control.rate(now);
    assert!(
        (0.9 * START_RATE..0.95 * START_RATE).contains(&near),
        "{near}"
    );
    let now = run_binding(&mut control, now, 1_000);
    let after = control.rate(now);
    assert!(
        after < near * 1.05,
        "slow near the estimate: {near} → {after}"
    );
    assert!(cut < near);
}

/// An account that counts the batches of the last second, as mParticle's limit and
/// the stand-in do, shared by `replicas` that each send at their rate and read the
/// account's usage on every answer; `limit(ms)` is the limit at a time. Runs `for_ms`
/// in 10 ms steps; returns the account's batches in the last second.
fn share_an_account(
    replicas: &mut [RateControl],
    limit: impl Fn(u64) -> f64,
    from: Instant,
    for_ms: u64,
) -> usize {
    let mut window: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut owed = vec![0.0; replicas.len()];
    for step in 1..=for_ms / 10 {
        let now = from + ms(step * 10);
        while window
            .front()
            .is_some_and(|(at, _)| now - *at >= USAGE_WINDOW)
        {
            window.pop_front();
        }
        for (replica, owed) in replicas.iter_mut().zip(&mut owed) {
            replica.bound(now);
            *owed += replica.rate(now) / 100.0;
            let batches = *owed as usize;
            *owed -= batches as f64;
            if batches == 0 {
                continue;
            }
            let counted: usize = window.iter().map(|(_, n)| n).sum();
            let limit = limit(step * 10);
            let signal = if (counted + batches) as f64 > limit {
                Signal::Refused(LimitHit::Account)
            } else {
                window.push_back((now, batches));
                let usage = 100.0 * (counted + batches) as f64 / limit;
                Signal::Accepted {
                    batches,
                    usage_percent: Some(usage.round().min(100.0)),
                }
            };
            replica.observe(now, now, signal);
        }
    }
    window.iter().map(|(_, n)| n).sum()
}

#[test]
fn one_replica_settles_under_the_limit_from_the_usage_alone() {
    let start = Instant::now();
    let mut control = [RateControl::new(None, start)];
    let last_second = share_an_account(&mut control, |_| 300.0, start, 10_000);
    assert!((270..=300).contains(&last_second), "{last_second}");
}

#[test]
fn replicas_sharing_a_limit_settle_on_it_from_the_usage_they_all_see() {
    let start = Instant::now();
    let mut replicas: Vec<RateControl> = (0..3)
        .map(|i| {
            let mut c = RateControl::new(None, start);
            c.random = Xorshift::seeded(i + 1);
            c
        })
        .collect();
    let last_second = share_an_account(&mut replicas, |_| 300.0, start, 10_000);
    assert!((255..=300).contains(&last_second), "{last_second}");
}

#[test]
fn a_lowered_limit_is_followed_within_seconds_and_a_raised_one_used_again() {
    let start = Instant::now();
    let mut control = [RateControl::new(None, start)];
    share_an_account(&mut control, |_| 300.0, start, 10_000);
    let lowered = share_an_account(&mut control, |_| 100.0, start + ms(10_000), 3_000);
    assert!((80..=100).contains(&lowered), "{lowered}");
    let raised = share_an_account(&mut control, |_| 300.0, start + ms(13_000), 5_000);
    assert!((255..=300).contains(&raised), "{raised}");
}

#[test]
fn usage_is_read_as_what_it_will_be_at_the_rate_now() {
    let start = Instant::now();
    let mut control = RateControl::new(None, start);
    // The window holds a second at the starting rate; the rate has since doubled.
    let now = start + Duration::from_secs(10);
    control.count_accepted(now - ms(500), START_RATE as usize);
    control.rate(now);
    control.rate = START_RATE * 2.0;
    let usage = Signal::Accepted {
        batches: 0,
        usage_percent: Some(60.0),
    };
    control.observe(now, now, usage);
    // Read as 120%: cut before mParticle refuses anything.
    let cut = control.rate(now);
    assert!(
        (cut - START_RATE * 2.0 * CUT_ON_FULL_USAGE).abs() < 1e-6,
        "{cut}"
    );
}

#[test]
fn full_usage_cuts_at_most_every_half_second() {
    let start = Instant::now();
    let mut control = RateControl::new(None, start);
    control.count_accepted(start, START_RATE as usize);
    let full = Signal::Accepted {
        batches: 0,
        usage_percent: Some(100.0),
    };
    control.observe(start + ms(10), start, full);
    let once = control.rate(start + ms(10));
    assert!(
        (once - START_RATE * CUT_ON_FULL_USAGE).abs() < 1e-6,
        "{once}"
    );
    control.observe(start + ms(200), start, full);
    assert_eq!(control.rate(start + ms(200)), once);
}

#[test]
fn an_acceleration_429_slows_growth_without_setting_an_estimate() {
    let start = Instant::now();
    let mut control = RateControl::new(None, start);
    control.observe(start, start, Signal::Refused(LimitHit::Acceleration));
    assert!(control.refused_rate.is_none());
    let cut = control.rate(start);
    let now = run_binding(&mut control, start, 1_000);
    let grown = control.rate(now) / cut;
    // A quarter of the growth without a signal: e^0.5 rather than e^2.
    assert!(grown > 1.5 && grown < 1.8, "{grown}");
}

#[test]
fn an_account_that_reported_its_usage_and_went_quiet_is_not_probed_fast() {
    let start = Instant::now();
    let mut control = RateControl::new(None, start);
    control.observe(
        start,
        start,
        Signal::Accepted {
            batches: 10,
            usage_percent: Some(50.0),
        },
    );
    // Past the usage's freshness, with no answer since (a Retry-After hold).
    let later = start + USAGE_FRESH_FOR + Duration::from_secs(3);
    control.rate(later);
    let before = control.rate(later);
    let now = run_binding(&mut control, later, 1_000);
    assert!(
        control.rate(now) < before * 1.05,
        "{before} → {}",
        control.rate(now)
    );
}

#[test]
fn the_rate_never_falls_below_the_floor() {
    let start = Instant::now();
    let mut control = RateControl::new(None, start);
    let mut now = start;
    for _ in 0..100 {
        now += CUT_EVERY;
        control.observe(now, now, Signal::Refused(LimitHit::Account));
    }
    assert_eq!(control.rate(now), MIN_RATE);
}
