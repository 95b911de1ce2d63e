//! Request bodies made of batches already serialised, without copying them again.
//!
//! The source reader writes the batches of one piece into one buffer, a comma between
//! each two; each [`Batch`] is a range of that buffer. A request's body is the batch alone
//! (`/events`) or `[a,b,…]` (`/bulkevents`), sent as a list of chunks: a run of batches
//! that lie next to each other in one buffer goes out as one slice of it, so a full
//! request built from one piece is three chunks (`[`, the slice, `]`) and nothing is
//! copied on the way to the socket. Copying the ~70 KB of every request into one vector
//! was a tenth of the delivery workers' time (docs/benchmarks-history.md).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// One batch's JSON: a range of the buffer it was written into.
#[derive(Debug, Clone)]
pub struct Batch {
    buffer: Bytes,
    range: Range<usize>,
}

impl Batch {
    /// The batch at `range` of `buffer`.
    pub fn new(buffer: Bytes, range: Range<usize>) -> Batch {
        assert!(range.end <= buffer.len(), "a batch lies inside its buffer");
        Batch { buffer, range }
    }

    /// A batch in a buffer of its own.
    pub fn alone(json: Vec<u8>) -> Batch {
        let range = 0..json.len();
        Batch::new(Bytes::from(json), range)
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    pub fn json(&self) -> &[u8] {
        &self.buffer[self.range.clone()]
    }

    /// Whether `next` follows this batch in the same buffer, one comma after it.
    fn followed_by(&self, next: &Batch) -> bool {
        self.buffer.as_ptr() == next.buffer.as_ptr()
            && self.buffer.len() == next.buffer.len()
            && next.range.start == self.range.end + 1
            && self.buffer[self.range.end] == b','
    }
}

/// The body of one request, as chunks to write in order.
#[derive(Debug)]
pub struct RequestBody {
    bulk: bool,
    batches: usize,
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl RequestBody {
    /// One batch alone (for `/events`) or several as a JSON array (for `/bulkevents`).
    pub fn of<'b>(batches: impl IntoIterator<Item = &'b Batch>) -> RequestBody {
        let batches: Vec<&Batch> = batches.into_iter().collect();
        let mut chunks = VecDeque::new();
        if let [single] = batches[..] {
            chunks.push_back(single.buffer.slice(single.range.clone()));
        } else {
            chunks.push_back(Bytes::from_static(b"["));
            let mut runs = batches.iter();
            if let Some(first) = runs.next() {
                let (mut buffer, mut range) = (&first.buffer, first.range.clone());
                let mut last = *first;
                for &batch in runs {
                    if last.followed_by(batch) {
                        range.end = batch.range.end;
                    } else {
                        chunks.push_back(buffer.slice(range));
                        chunks.push_back(Bytes::from_static(b","));
                        (buffer, range) = (&batch.buffer, batch.range.clone());
                    }
                    last = batch;
                }
                chunks.push_back(buffer.slice(range));
            }
            chunks.push_back(Bytes::from_static(b"]"));
        }
        RequestBody {
            bulk: batches.len() != 1,
            batches: batches.len(),
            remaining: chunks.iter().map(Bytes::len).sum(),
            chunks,
        }
    }

    /// A body of batches given as plain slices, copied (tools and tests).
    pub fn copied(batches: &[&[u8]]) -> RequestBody {
        let batches: Vec<Batch> = batches.iter().map(|b| Batch::alone(b.to_vec())).collect();
        RequestBody::of(&batches)
    }

    /// True for `/bulkevents`, false for one batch to `/events`.
    pub fn is_bulk(&self) -> bool {
        self.bulk
    }

    /// How many batches it holds.
    pub fn batches(&self) -> usize {
        self.batches
    }

    pub fn len(&self) -> usize {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The whole body in one vector (tests).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.chunks.pop_front();
        if let Some(chunk) = &chunk {
            self.remaining -= chunk.len();
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining as u64)
    }
}

/// The size of the body for batches of these sizes, as [`RequestBody::of`] makes it.
pub fn array_size(batch_sizes: impl IntoIterator<Item = usize>) -> usize {
    let mut count = 0;
    let mut total = 0;
    for size in batch_sizes {
        count += 1;
        total += size;
    }
    total + count.max(1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches written the way the source reader writes a piece: commas between them.
    fn piece(jsons: &[&str]) -> Vec<Batch> {
        let mut buffer = Vec::new();
        let mut ranges = Vec::new();
        for json in jsons {
            if !buffer.is_empty() {
                buffer.push(b',');
            }
            let start = buffer.len();
            buffer.extend_from_slice(json.as_bytes());
            ranges.push(start..buffer.len());
        }
        let buffer = Bytes::from(buffer);
        ranges
            .into_iter()
            .map(|r| Batch::new(buffer.clone(), r))
            .collect()
    }

    #[test]
    fn a_whole_piece_goes_as_one_slice() {
        let batches = piece(&[r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
        let body = RequestBody::of(&batches);
        assert!(body.is_bulk());
        assert_eq!(body.chunks.len(), 3);
        assert_eq!(body.to_vec(), br#"[{"a":1},{"b":2},{"c":3}]"#);
        assert_eq!(body.len(), array_size(batches.iter().map(Batch::len)));
    }

    #[test]
    fn gaps_and_other_buffers_start_new_runs() {
        let first = piece(&["1", "22", "333", "4444"]);
        let other = piece(&["x", "y"]);
        let chosen = [
            &first[0], &first[2], &first[3], &other[0], &other[1], &first[1],
        ];
        let body = RequestBody::of(chosen);
        assert_eq!(body.to_vec(), b"[1,333,4444,x,y,22]");
        assert_eq!(body.len(), array_size(chosen.iter().map(|b| b.len())));
        // [ 1 , 333,4444 , x,y , 22 ]
        assert_eq!(body.chunks.len(), 9);
    }

    #[test]
    fn one_batch_is_sent_alone() {
        let batches = piece(&[r#"{"a":1}"#, r#"{"b":2}"#]);
        let body = RequestBody::of([&batches[1]]);
        assert!(!body.is_bulk());
        assert_eq!(body.to_vec(), br#"{"b":2}"#);
        assert_eq!(batches[1].json(), br#"{"b":2}"#);
    }

    #[test]
    fn copied_slices_make_the_same_body() {
        let body = RequestBody::copied(&[b"{}", b"[]"]);
        assert_eq!(body.to_vec(), b"[{},[]]");
        assert_eq!(body.len(), 7);
    }
}
