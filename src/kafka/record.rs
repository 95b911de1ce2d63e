//! A consumed record, with everything needed to send it on, retry it or dead-letter it
//! byte for byte.
//!
//! A source record stays librdkafka's message until its outcome: key and value are read
//! where librdkafka decoded them, and the headers are parsed only if something asks for
//! them (a retry or dead-letter copy). Copying every record out instead (value, key, and
//! librdkafka's header parse, which allocates even for none) cost a tenth of the
//! forwarder's CPU. A record kept for long, such as a retry waiting in the schedule, is
//! copied, so that it does not pin the fetch buffer it came in.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;

use super::topic::Topic;

/// One header: its name and its value (`None` for a header without one).
pub type Header = (HeaderName, Option<Vec<u8>>);

/// A header's name as it arrived: bytes, nearly always text (Kafka does not require it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderName(Vec<u8>);

impl HeaderName {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True when the name is exactly `name`.
    pub fn is(&self, name: &str) -> bool {
        self.0 == name.as_bytes()
    }

    pub fn starts_with(&self, prefix: &str) -> bool {
        self.0.starts_with(prefix.as_bytes())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq<str> for HeaderName {
    fn eq(&self, name: &str) -> bool {
        self.is(name)
    }
}

impl PartialEq<&str> for HeaderName {
    fn eq(&self, name: &&str) -> bool {
        self.is(name)
    }
}

impl From<&str> for HeaderName {
    fn from(name: &str) -> Self {
        HeaderName(name.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for HeaderName {
    fn from(name: Vec<u8>) -> Self {
        HeaderName(name)
    }
}

/// Header names and values, in order, as they arrived.
pub type HeaderList = Vec<Header>;

/// One record as consumed: key, value bytes and headers exactly as they arrived.
#[derive(Debug)]
pub struct SourceRecord {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (create or log-append time), unix ms.
    pub timestamp_ms: Option<i64>,
    content: Content,
}

enum Content {
    Owned {
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: HeaderList,
    },
    /// librdkafka's message, read in place. `message` is declared first so that it is
    /// freed before `_client` lets go of the client it belongs to.
    Held {
        message: BorrowedMessage<'static>,
        headers: OnceLock<HeaderList>,
        _client: Arc<dyn Any + Send + Sync>,
    },
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Content::Owned { .. } => "Owned",
            Content::Held { .. } => "Held",
        })
    }
}

impl SourceRecord {
    /// A record made of owned parts (a test's, or one read back by a tool).
    pub fn new(
        topic: Topic,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: HeaderList,
    ) -> SourceRecord {
        SourceRecord {
            topic,
            partition,
            offset,
            timestamp_ms,
            content: Content::Owned {
                key,
                value,
                headers,
            },
        }
    }

    /// Copies a borrowed message (of `topic`, which the caller has at hand).
    pub fn copy_from(message: &BorrowedMessage<'_>, topic: Topic) -> SourceRecord {
        SourceRecord::new(
            topic,
            message.partition(),
            message.offset(),
            message.timestamp().to_millis(),
            message.key().map(<[u8]>::to_vec),
            message.payload().map(<[u8]>::to_vec),
            copy_headers(message),
        )
    }

    /// Keeps librdkafka's message as the record, without copying it. `client` is what
    /// owns the librdkafka client the message came from: the record keeps it alive,
    /// because librdkafka must not be destroyed while one of its messages is.
    pub fn hold(
        message: BorrowedMessage<'_>,
        topic: Topic,
        client: Arc<dyn Any + Send + Sync>,
    ) -> SourceRecord {
        // The record holds the client (`_client`) and frees the message first (the field
        // order of `Content::Held`), as `keep_message` requires.
        let message = super::ffi::keep_message(message);
        SourceRecord {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            content: Content::Held {
                message,
                headers: OnceLock::new(),
                _client: client,
            },
        }
    }

    pub fn key(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Owned { key, .. } => key.as_deref(),
            Content::Held { message, .. } => message.key(),
        }
    }

    pub fn value(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Owned { value, .. } => value.as_deref(),
            Content::Held { message, .. } => message.payload(),
        }
    }

    /// The headers, in order. Read out of a held message the first time they are asked
    /// for (librdkafka parses them lazily and is not to be asked from two threads at once).
    pub fn headers(&self) -> &[Header] {
        match &self.content {
            Content::Owned { headers, .. } => headers,
            Content::Held {
                message, headers, ..
            } => headers.get_or_init(|| copy_headers(message)),
        }
    }

    /// The value of the first header named `name`, as text.
    pub fn header_text(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|(key, _)| key.is(name))
            .and_then(|(_, value)| value.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

fn copy_headers(message: &BorrowedMessage<'_>) -> HeaderList {
    message
        .headers()
        .map(super::ffi::read_headers)
        .unwrap_or_default()
}
