//! Delivery of one event to many subscribers without ever waiting on one of them.
//!
//! The feed, bot and session actors publish through [`Subscribers`]: each delivery is a
//! `try_send` into the subscriber's bounded mailbox. A full mailbox costs the event for that
//! subscriber only (the caller decides whether to conflate or count the drop); a closed one is
//! forgotten. Publishing is therefore O(subscribers) with no await, whatever the subscribers do.

use std::fmt;

use actix::prelude::*;

/// What one [`Subscribers::publish`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Subscribers whose mailbox took the event.
    pub delivered: usize,
    /// Subscribers whose mailbox was full; they did not get it.
    pub full: usize,
    /// Subscribers that had stopped; they were removed.
    pub closed: usize,
}

/// A set of subscribers to events of type `M`, keyed by `K` so they can unsubscribe.
pub struct Subscribers<K, M>
where
    M: Message + Send,
    M::Result: Send,
{
    entries: Vec<(K, Recipient<M>)>,
}

impl<K: fmt::Debug, M> fmt::Debug for Subscribers<K, M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(k, _)| k)).finish()
    }
}

impl<K, M> Default for Subscribers<K, M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<K: PartialEq, M> Subscribers<K, M>
where
    M: Message + Send + Clone,
    M::Result: Send,
{
    /// Adds `recipient` under `key`, replacing an earlier subscription with the same key.
    pub fn subscribe(&mut self, key: K, recipient: Recipient<M>) {
        self.unsubscribe(&key);
        self.entries.push((key, recipient));
    }

    /// Removes the subscription under `key`; true if there was one.
    pub fn unsubscribe(&mut self, key: &K) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k != key);
        self.entries.len() != before
    }

    /// How many subscribers there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nobody is subscribed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The subscribers' keys, in subscription order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Offers `event` to one subscriber without waiting; `on_full` gets it back if the mailbox
    /// is full. A closed subscriber is removed. False if there is no such subscriber.
    pub fn publish_to(&mut self, key: &K, event: M, on_full: impl FnOnce(M)) -> bool {
        let Some(index) = self.entries.iter().position(|(k, _)| k == key) else { return false };
        match self.entries[index].1.try_send(event) {
            Ok(()) => {}
            Err(SendError::Full(event)) => on_full(event),
            Err(SendError::Closed(_)) => {
                self.entries.swap_remove(index);
            }
        }
        true
    }

    /// Offers `event` to every subscriber without waiting. `on_full` is called with the key and
    /// the undelivered event for each full mailbox, so the caller can conflate or count it.
    pub fn publish(&mut self, event: &M, mut on_full: impl FnMut(&K, M)) -> Delivery {
        let mut delivery = Delivery::default();
        self.entries.retain(|(key, recipient)| {
            match recipient.try_send(event.clone()) {
                Ok(()) => delivery.delivered += 1,
                Err(SendError::Full(event)) => {
                    delivery.full += 1;
                    on_full(key, event);
                }
                Err(SendError::Closed(_)) => {
                    delivery.closed += 1;
                    return false;
                }
            }
            true
        });
        delivery
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[derive(Clone, Message)]
    #[rtype(result = "()")]
    struct Tick;

    struct Counter {
        seen: Arc<AtomicUsize>,
        capacity: usize,
    }
    impl Actor for Counter {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(self.capacity);
        }
    }
    impl Handler<Tick> for Counter {
        type Result = ();
        fn handle(&mut self, _: Tick, _: &mut Context<Self>) {
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Halt;
    impl Handler<Halt> for Counter {
        type Result = ();
        fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    fn counter(capacity: usize) -> (Arc<AtomicUsize>, Addr<Counter>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let addr = Counter { seen: seen.clone(), capacity }.start();
        (seen, addr)
    }

    #[actix_rt::test]
    async fn every_subscriber_gets_the_event() {
        let mut subs = Subscribers::default();
        let counts: Vec<_> = (0..3)
            .map(|i| {
                let (seen, addr) = counter(16);
                subs.subscribe(i, addr.recipient());
                seen
            })
            .collect();
        let delivery = subs.publish(&Tick, |_, _| {});
        assert_eq!(delivery, Delivery { delivered: 3, full: 0, closed: 0 });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(counts.iter().all(|c| c.load(Ordering::SeqCst) == 1));
    }

    #[actix_rt::test]
    async fn a_full_subscriber_is_skipped_not_awaited() {
        let mut subs = Subscribers::default();
        let (_seen, addr) = counter(1);
        subs.subscribe("slow", addr.recipient());
        // Let the actor start (and apply its capacity); after that nothing runs it between these
        // calls, so its mailbox fills up.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut dropped = 0;
        for _ in 0..10 {
            let d = subs.publish(&Tick, |key, _| {
                assert_eq!(*key, "slow");
                dropped += 1;
            });
            assert_eq!(d.delivered + d.full, 1);
        }
        assert!(dropped > 0, "the bounded mailbox never filled");
        assert_eq!(subs.len(), 1);
    }

    #[actix_rt::test]
    async fn stopped_subscribers_are_removed_and_unsubscribe_works() {
        let mut subs = Subscribers::default();
        let (_a, a) = counter(16);
        let (_b, b) = counter(16);
        subs.subscribe(1, a.recipient());
        subs.subscribe(2, b.clone().recipient());
        assert!(subs.unsubscribe(&1));
        assert!(!subs.unsubscribe(&1));
        b.do_send(Halt);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let d = subs.publish(&Tick, |_, _| {});
        assert_eq!(d.closed, 1);
        assert!(subs.is_empty());
    }
}
