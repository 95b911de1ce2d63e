//! What an Events API answer means for the records in the request (interface §6). Pure.

use std::time::Duration;

use crate::outcome::ErrorKind;

/// The meaning of one request's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx: every batch in the request is accepted.
    Delivered,
    /// May succeed later: timeout, connection error, 408, 429, 5xx other than 501.
    Retryable(ErrorKind),
    /// Will never succeed as sent: 400, 404, 413, 422, 501, other 4xx.
    Permanent(ErrorKind),
    /// 401 or 403: the key or secret is wrong; no record is at fault.
    AuthFailed,
}

impl Verdict {
    /// Classifies an HTTP status.
    pub fn of_status(status: u16) -> Verdict {
        match status {
            200..=299 => Verdict::Delivered,
            401 | 403 => Verdict::AuthFailed,
            408 => Verdict::Retryable(ErrorKind::Timeout),
            429 => Verdict::Retryable(ErrorKind::Http429),
            501 => Verdict::Permanent(ErrorKind::Http4xx),
            500..=599 => Verdict::Retryable(ErrorKind::Http5xx),
            // 1xx and 3xx are not answers the Events API gives; nothing was accepted, and
            // sending the same request again cannot change that.
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
        s if (400..500).contains(&s) => "4xx",
        s if (500..600).contains(&s) => "5xx",
        _ => "other",
    }
}

/// Parses `Retry-After` as mParticle sends it: whole seconds. HTTP dates are not used by
/// the Events API and are ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
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
            (404, Verdict::Permanent(ErrorKind::Http4xx)),
            (408, Verdict::Retryable(ErrorKind::Timeout)),
            (413, Verdict::Permanent(ErrorKind::Http4xx)),
            (422, Verdict::Permanent(ErrorKind::Http4xx)),
            (429, Verdict::Retryable(ErrorKind::Http429)),
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
}
