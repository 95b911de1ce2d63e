//! The fixed set of reasons a record can fail, as written to the `forwarder-error-kind`
//! header and used as the `kind` metric label.

use std::fmt;

/// Why a record was retried or dead-lettered. A short fixed set, so it is safe as a
/// metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request to mParticle took longer than `MPARTICLE_TIMEOUT`.
    Timeout,
    /// mParticle could not be reached (refused, reset, DNS, TLS).
    Connect,
    /// mParticle rate-limited the request.
    Http429,
    /// mParticle failed with a server error (other than 501).
    Http5xx,
    /// mParticle refused the batch for good (400, 404, 413, 422, 501, other 4xx).
    Http4xx,
    /// The record value is not UTF-8 JSON.
    InvalidJson,
    /// The record is JSON but not a loyalty event (schema, missing required field).
    InvalidEvent,
    /// A required field assignment found no value in the event.
    Mapping,
    /// The record or the batch it makes is over mParticle's size limits.
    TooLarge,
    /// The action has no event definition and `UNMAPPED_ACTION=dead-letter`.
    Unmapped,
    /// Every delivery attempt failed retryably.
    AttemptsExhausted,
    /// Not sent yet: an earlier record of the customer waits for a retry, and this one
    /// waits behind it (no attempt used).
    HeldBehind,
    /// The record names no account of the accounts file (or none, without a default).
    UnknownAccount,
    /// Not sent yet: its account cannot send (refused credentials, an outage, rate
    /// limited) and its records in memory are at their bound, so it waits in the retry
    /// topic (no attempt used).
    AccountStopped,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Http429 => "http_429",
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::InvalidEvent => "invalid_event",
            ErrorKind::Mapping => "mapping",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unmapped => "unmapped_action",
            ErrorKind::AttemptsExhausted => "attempts_exhausted",
            ErrorKind::HeldBehind => "held_behind",
            ErrorKind::UnknownAccount => "unknown_account",
            ErrorKind::AccountStopped => "account_stopped",
        }
    }

    /// Parses a header value back; `None` for a kind this version does not know.
    pub fn parse(text: &str) -> Option<ErrorKind> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == text)
    }
}

/// Every kind, for parsing and for documentation.
pub const ALL_KINDS: &[ErrorKind] = &[
    ErrorKind::Timeout,
    ErrorKind::Connect,
    ErrorKind::Http429,
    ErrorKind::Http5xx,
    ErrorKind::Http4xx,
    ErrorKind::InvalidJson,
    ErrorKind::InvalidEvent,
    ErrorKind::Mapping,
    ErrorKind::TooLarge,
    ErrorKind::Unmapped,
    ErrorKind::AttemptsExhausted,
    ErrorKind::HeldBehind,
    ErrorKind::UnknownAccount,
    ErrorKind::AccountStopped,
];

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back() {
        for kind in ALL_KINDS {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(ErrorKind::parse("nonsense"), None);
    }
}
