//! The service's only `unsafe` code: where rdkafka's safe API does not reach.
//!
//! - **Header names as bytes.** Kafka lets a header name be any bytes; rdkafka's
//!   accessors hand names out as `&str` and panic on one that is not UTF-8, and take names
//!   in only as `&str`. A record carrying such a name could then never be dead-lettered,
//!   and its partition would stop there. [`read_headers`] and [`write_headers`] call
//!   librdkafka's header functions directly.
//! - **A message kept past its poll.** [`keep_message`] lets a record hold librdkafka's
//!   message without copying it; the record keeps the client alive for as long.
//!
//! Every other module denies `unsafe` (`#![deny(unsafe_code)]` in the crate roots).

use std::ffi::{CStr, c_char, c_void};

use rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
use rdkafka::bindings::{rd_kafka_header_add, rd_kafka_header_get_all, rd_kafka_headers_t};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, OwnedHeaders};

use super::record::{HeaderList, HeaderName};

/// Every header of `headers`, in order, names and values as bytes.
pub fn read_headers(headers: &BorrowedHeaders) -> HeaderList {
    // rdkafka's BorrowedHeaders is an opaque stand-in whose address is librdkafka's headers
    // object (it is made by casting that pointer).
    let native = headers as *const BorrowedHeaders as *const rd_kafka_headers_t;
    let mut out = HeaderList::new();
    for index in 0.. {
        let mut name: *const c_char = std::ptr::null();
        let mut value: *const c_void = std::ptr::null();
        let mut size: usize = 0;
        // SAFETY: `native` is a live headers object, borrowed for this call; librdkafka
        // writes the three out-pointers, or answers an error past the last header.
        let err =
            unsafe { rd_kafka_header_get_all(native, index, &mut name, &mut value, &mut size) };
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            break;
        }
        // SAFETY: librdkafka keeps a NUL-terminated copy of each name and `size` bytes of
        // each value (or a null value) for as long as the headers live; both are copied
        // out here before the borrow ends.
        let (name, value) = unsafe {
            (
                CStr::from_ptr(name).to_bytes().to_vec(),
                (!value.is_null())
                    .then(|| std::slice::from_raw_parts(value.cast::<u8>(), size).to_vec()),
            )
        };
        out.push((HeaderName::from(name), value));
    }
    out
}

/// `headers` as librdkafka headers for a record to produce, names as bytes.
pub fn write_headers(headers: &HeaderList) -> OwnedHeaders {
    let owned = OwnedHeaders::new_with_capacity(headers.len());
    let native = owned.as_borrowed() as *const BorrowedHeaders as *mut rd_kafka_headers_t;
    for (name, value) in headers {
        let name = name.as_bytes();
        let (value_ptr, value_len) = match value {
            Some(v) => (v.as_ptr().cast::<c_void>(), v.len() as isize),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `owned` is a fresh, writable headers object that nothing else refers to
        // yet; librdkafka copies the name and the value (sizes given, no NUL needed).
        let err = unsafe {
            rd_kafka_header_add(
                native,
                name.as_ptr().cast::<c_char>(),
                name.len() as isize,
                value_ptr,
                value_len,
            )
        };
        // Adding fails only on a read-only headers object, which a new one is not.
        debug_assert_eq!(err, RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    owned
}

/// `message` with its tie to the client it was polled from lifted. The caller must keep
/// that client alive for as long as the message, and drop the message first
/// ([`SourceRecord::hold`](super::record::SourceRecord::hold) does both).
pub fn keep_message(message: BorrowedMessage<'_>) -> BorrowedMessage<'static> {
    // SAFETY: the lifetime only ties the message to the client it was polled from, which
    // the caller keeps alive longer (above). The message owns its librdkafka event (freed
    // on drop), and rdkafka makes it Send and Sync.
    unsafe { std::mem::transmute(message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_survive_a_round_trip() {
        let headers: HeaderList = vec![
            (HeaderName::from(b"trace".to_vec()), Some(b"t-1".to_vec())),
            (HeaderName::from(vec![0xff, 0xfe, b'x']), Some(vec![0x80])),
            (HeaderName::from(b"empty".to_vec()), None),
        ];
        let owned = write_headers(&headers);
        assert_eq!(read_headers(owned.as_borrowed()), headers);
    }
}
