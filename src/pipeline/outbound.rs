//! A record on its way to mParticle with its batch. Bulk assembly may merge the batches of
//! one customer's records that wait together ([`Outbound::merge`]): the first record then
//! carries the others as followers, and the request sends their merged batch. Whatever
//! the answer, each record keeps its own batch, so a merged batch can be taken apart again
//! ([`Outbound::into_members`]) to find the one record mParticle refused.

use std::borrow::{Borrow, BorrowMut};
use std::ops::Range;

use bytes::Bytes;

use super::InFlight;
use super::holds::Customer;
use super::intake::Taken;
use crate::mparticle::body::Batch;
use crate::mparticle::merge::merged;

pub(crate) struct Outbound {
    pub item: InFlight,
    /// The record's own batch.
    pub batch: Batch,
    /// Its `user_identities` member, from the batch's start.
    identities: Range<usize>,
    merged: Option<Box<Merged>>,
}

/// Later records of the customer, in order, and the batch that carries every event.
struct Merged {
    batch: Batch,
    followers: Vec<Outbound>,
}

impl Outbound {
    /// A record intake took in, its batch in `buffer`.
    pub fn new(taken: Taken, buffer: &Bytes) -> Outbound {
        Outbound {
            item: taken.item,
            batch: Batch::new(buffer.clone(), taken.batch),
            identities: taken.identities,
            merged: None,
        }
    }

    /// The batch a request sends for this record: the merged one, or its own.
    pub fn sent(&self) -> &Batch {
        self.merged.as_ref().map_or(&self.batch, |m| &m.batch)
    }

    /// How many events [`sent`](Self::sent) carries.
    pub fn events(&self) -> usize {
        1 + self.merged.as_ref().map_or(0, |m| m.followers.len())
    }

    /// Whose record this is, for keeping a customer's records in order: its Kafka key
    /// (upstream keys records by customer); `None` without one.
    pub fn customer(&self) -> Option<Customer> {
        super::holds::customer_of(&self.item.record).map(Customer::from)
    }

    /// Whether `next` may share this record's batch: the same mapped identities, from the
    /// same partition (so that their order is their offsets').
    pub fn joins(&self, next: &Outbound) -> bool {
        let (a, b) = (&self.item, &next.item);
        !self.identities.is_empty()
            && a.origin == b.origin
            && a.record.partition == b.record.partition
            && a.record.topic == b.record.topic
            && self.batch.json()[self.identities.clone()]
                == next.batch.json()[next.identities.clone()]
    }

    /// Carries `followers` (later records of the customer, in order) in one batch with this
    /// one; gives them back when the batches cannot be merged (mParticle's limits).
    pub fn merge(&mut self, followers: Vec<Outbound>) -> Result<(), Vec<Outbound>> {
        let json = merged(
            std::iter::once(self.batch.json()).chain(followers.iter().map(|f| f.batch.json())),
        );
        match json {
            Some(json) => {
                self.merged = Some(Box::new(Merged {
                    batch: Batch::alone(json),
                    followers,
                }));
                Ok(())
            }
            None => Err(followers),
        }
    }

    /// Every record whose event the batch carries.
    pub fn records(&self) -> impl Iterator<Item = &InFlight> {
        std::iter::once(&self.item).chain(
            self.merged
                .iter()
                .flat_map(|m| m.followers.iter().map(|f| &f.item)),
        )
    }

    pub fn records_mut(&mut self) -> impl Iterator<Item = &mut InFlight> {
        std::iter::once(&mut self.item).chain(
            self.merged
                .iter_mut()
                .flat_map(|m| m.followers.iter_mut().map(|f| &mut f.item)),
        )
    }

    /// Its records, each with its own batch again, in order.
    pub fn into_members(mut self) -> Vec<Outbound> {
        let followers = self.merged.take().map_or_else(Vec::new, |m| m.followers);
        let mut members = Vec::with_capacity(1 + followers.len());
        members.push(self);
        members.extend(followers);
        members
    }
}

/// Each record of `outbounds`, with its own batch, in order.
pub(crate) fn members(outbounds: Vec<Outbound>) -> Vec<Outbound> {
    if outbounds.iter().all(|o| o.merged.is_none()) {
        return outbounds;
    }
    outbounds
        .into_iter()
        .flat_map(Outbound::into_members)
        .collect()
}

/// A request's records finish where they stand ([`Context::finish`](super::Context::finish)).
impl Borrow<InFlight> for Outbound {
    fn borrow(&self) -> &InFlight {
        &self.item
    }
}

impl BorrowMut<InFlight> for Outbound {
    fn borrow_mut(&mut self) -> &mut InFlight {
        &mut self.item
    }
}
