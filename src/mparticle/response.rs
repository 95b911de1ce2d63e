//! What an Events API answer means for the records in the request (the README's
//! "Outcomes"). Pure.

use std::time::Duration;

use crate::outcome::ErrorKind;

/// The meaning of one request's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx: every batch in the request is accepted.
    Delivered,
    /// May succeed later: timeout, connection error, 408, 5xx other than 501.
    Retryable(ErrorKind),
    /// 429: the account is busy, which is never the records' fault. They are sent again
    /// once the pacer allows, without using an attempt.
    RateLimited,
    /// Will never succeed as sent: 400, 404, 413, 422, 501, other 4xx.
    Permanent(ErrorKind),
    /// 401, 403, or a redirect (3xx, never followed: a redirected POST would come back as
    /// a GET without its body): the account's key, secret or URL is wrong; no record is
    /// at fault.
    AuthFailed,
}

impl Verdict {
    /// Classifies an HTTP status.
    pub fn of_status(status: u16) -> Verdict {
        match status {
            200..=299 => Verdict::Delivered,
            401 | 403 | 300..=399 => Verdict::AuthFailed,
            408 => Verdict::Retryable(ErrorKind::Timeout),
            429 => Verdict::RateLimited,
            501 => Verdict::Permanent(ErrorKind::Http4xx),
            500..=599 => Verdict::Retryable(ErrorKind::Http5xx),
            // 1xx is not an answer the Events API gives; nothing was accepted, and sending
            // the same request again cannot change that.
            _ => Verdict::Permanent(ErrorKind::Http4xx),
        }
    }
}

/// The metric label for an answer: `2xx`, `5xx`, the exact status for other codes the
/// runbook cares about, `4xx` for the rest (a bounded set).
pub fn status_label(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        501 => "501",
        s if (200..300).contains(&s) => "2xx",
        s if (300..400).contains(&s) => "3xx",
        s if (400..500).contains(&s) => "4xx",
        s if (500..600).contains(&s) => "5xx",
        _ => "other",
    }
}

/// The longest `Retry-After` honoured. A larger value (or a garbled one) from mParticle or
/// a proxy in front of it must not hold every request for days, nor overflow the clock.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses `Retry-After` as mParticle sends it: whole seconds, at most
/// [`MAX_RETRY_AFTER`]. HTTP dates are not used by the Events API and are ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds = value.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// Which of mParticle's limits a 429 says was hit (`X-mp-rate-limit-exceeded`), a bounded
/// metric label. `Acceleration` means traffic grew too fast, not that it is too high.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Org,
    Account,
    App,
    Feed,
    Workspace,
    System,
    Acceleration,
    /// Absent, or a value this version does not know.
    Unnamed,
}

impl LimitHit {
    pub const ALL: [LimitHit; 8] = [
        LimitHit::Org,
        LimitHit::Account,
        LimitHit::App,
        LimitHit::Feed,
        LimitHit::Workspace,
        LimitHit::System,
        LimitHit::Acceleration,
        LimitHit::Unnamed,
    ];

    /// Reads the header's value; `None` (no header) is [`LimitHit::Unnamed`].
    pub fn parse(value: Option<&str>) -> LimitHit {
        let value = value.map(str::trim).unwrap_or_default();
        LimitHit::ALL
            .into_iter()
            .find(|limit| limit.as_str().eq_ignore_ascii_case(value))
            .unwrap_or(LimitHit::Unnamed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LimitHit::Org => "org",
            LimitHit::Account => "account",
            LimitHit::App => "app",
            LimitHit::Feed => "feed",
            LimitHit::Workspace => "workspace",
            LimitHit::System => "system",
            LimitHit::Acceleration => "acceleration",
            LimitHit::Unnamed => "unnamed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_interface_says() {
        let table: &[(u16, Verdict)] = &[
            (200, Verdict::Delivered),
            (202, Verdict::Delivered),
            (400, Verdict::Permanent(ErrorKind::Http4xx)),
            (401, Verdict::AuthFailed),
            (403, Verdict::AuthFailed),
            (301, Verdict::AuthFailed),
            (302, Verdict::AuthFailed),
            (307, Verdict::AuthFailed),
            (404, Verdict::Permanent(ErrorKind::Http4xx)),
            (408, Verdict::Retryable(ErrorKind::Timeout)),
            (413, Verdict::Permanent(ErrorKind::Http4xx)),
            (422, Verdict::Permanent(ErrorKind::Http4xx)),
            (429, Verdict::RateLimited),
            (500, Verdict::Retryable(ErrorKind::Http5xx)),
            (501, Verdict::Permanent(ErrorKind::Http4xx)),
            (502, Verdict::Retryable(ErrorKind::Http5xx)),
            (503, Verdict::Retryable(ErrorKind::Http5xx)),
            (504, Verdict::Retryable(ErrorKind::Http5xx)),
            (418, Verdict::Permanent(ErrorKind::Http4xx)),
        ];
        for (status, verdict) in table {
            assert_eq!(Verdict::of_status(*status), *verdict, "status {status}");
        }
    }

    #[test]
    fn status_labels_are_bounded() {
        assert_eq!(status_label(202), "2xx");
        assert_eq!(status_label(503), "5xx");
        assert_eq!(status_label(429), "429");
        assert_eq!(status_label(451), "4xx");
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 10 "), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn a_huge_retry_after_is_bounded() {
        assert_eq!(parse_retry_after("10000000000"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn the_limit_hit_is_a_bounded_label() {
        assert_eq!(LimitHit::parse(Some("account")), LimitHit::Account);
        assert_eq!(
            LimitHit::parse(Some(" Acceleration ")),
            LimitHit::Acceleration
        );
        assert_eq!(LimitHit::parse(Some("galaxy")), LimitHit::Unnamed);
        assert_eq!(LimitHit::parse(None), LimitHit::Unnamed);
    }
}
