//! The feed's side of cluster mode (docs/CLUSTER.md): per symbol it wants, a feed either holds
//! the symbol's lease (and connects to the exchange for it, relaying every event) or follows
//! the holder through the stream (and never connects). Subscribers cannot tell the difference:
//! both paths end in the same `dispatch`.

use std::collections::{BTreeSet, HashMap};

use actix::prelude::*;

use super::FeedActor;
use crate::cluster::{
    Cluster, Follower, LEASE_EVERY, Received, RecentTrades, Relay, Seen, Verdict,
};
use keel_core::market::{EventKind, MarketEvent, Symbol};

/// Relayed events buffered between the followers and the feed.
const RECEIVED_BUFFER: usize = 65_536;
/// How long a stopping feed waits for its leases to be released (one NATS round trip each).
const RELEASE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

enum Role {
    /// This node holds the lease taken at revision `lease`, now at `revision`; `seq` numbers
    /// what it relayed, and a trade the exchange repeats is not relayed again.
    Held { lease: u64, revision: u64, seq: u64, renewing: bool, trades: RecentTrades },
    /// Another node (or none yet) holds it; this node reads the stream.
    Following { _follower: Follower, seen: Seen, acquiring: bool },
}

/// A feed's standing in the cluster.
pub(super) struct FeedCluster {
    cluster: Cluster,
    relay: Relay,
    roles: HashMap<Symbol, Role>,
    received: Option<tokio::sync::mpsc::Sender<Received>>,
}

impl FeedCluster {
    pub(super) fn new(cluster: Cluster, venue: keel_core::market::VenueId) -> Self {
        let relay = cluster.relay(venue);
        Self { cluster, relay, roles: HashMap::new(), received: None }
    }

    /// Whether this node holds `symbol`'s lease (and so connects to the exchange for it).
    pub(super) fn holds(&self, symbol: &Symbol) -> bool {
        matches!(self.roles.get(symbol), Some(Role::Held { .. }))
    }
}

impl FeedActor {
    /// Starts the lease rounds and the path relayed events come in by, in cluster mode.
    pub(super) fn start_cluster(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let (tx, mut rx) = tokio::sync::mpsc::channel(RECEIVED_BUFFER);
        cluster.received = Some(tx);
        ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        ctx.run_interval(LEASE_EVERY, |this, ctx| this.lease_round(ctx));
    }

    /// The symbols this feed wants data for.
    fn wanted_symbols(&self) -> BTreeSet<Symbol> {
        let streams = self.streams.keys().map(|(symbol, _)| symbol.clone());
        streams.chain(self.warm_until.keys().cloned()).collect()
    }

    /// One round: forget symbols no longer wanted, follow new ones, renew held leases and try to
    /// take the free ones.
    fn lease_round(&mut self, ctx: &mut Context<Self>) {
        let venue = self.venue();
        let wanted = self.wanted_symbols();
        let Some(cluster) = self.cluster.as_mut() else { return };
        // A symbol no longer wanted is no longer followed; its lease, if held, is given up, so a
        // node that still wants the symbol takes it at its next round.
        let unwanted: Vec<Symbol> =
            cluster.roles.keys().filter(|symbol| !wanted.contains(*symbol)).cloned().collect();
        for symbol in unwanted {
            if let Some(Role::Held { revision, .. }) = cluster.roles.remove(&symbol) {
                let key = Cluster::lease_key(venue, &symbol);
                let release = cluster.cluster.clone().release(key, revision);
                ctx.spawn(actix::fut::wrap_future::<_, Self>(async move {
                    release.await;
                }));
            }
        }
        for symbol in wanted {
            let key = Cluster::lease_key(venue, &symbol);
            let handle = cluster.cluster.clone();
            let role = match cluster.roles.entry(symbol.clone()) {
                std::collections::hash_map::Entry::Occupied(role) => role.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let Some(out) = cluster.received.clone() else { return };
                    let follower = handle.follow(venue, symbol.clone(), out);
                    slot.insert(Role::Following {
                        _follower: follower,
                        seen: Seen::default(),
                        acquiring: false,
                    })
                }
            };
            match role {
                Role::Held { revision, renewing: renewing @ false, .. } => {
                    *renewing = true;
                    let sym = symbol.clone();
                    ctx.spawn(
                        actix::fut::wrap_future::<_, Self>(handle.renew(key, *revision)).map(
                            move |renewed, this, _| {
                                this.renewed(&sym, renewed);
                            },
                        ),
                    );
                }
                Role::Following { acquiring: acquiring @ false, .. } => {
                    *acquiring = true;
                    let sym = symbol.clone();
                    ctx.spawn(actix::fut::wrap_future::<_, Self>(handle.acquire(key)).map(
                        move |taken, this, _| {
                            this.acquired(&sym, taken);
                        },
                    ));
                }
                _ => {}
            }
        }
        let held = cluster.roles.values().filter(|r| matches!(r, Role::Held { .. })).count();
        metrics::gauge!("keel_cluster_leases_held", "venue" => venue.as_str()).set(held as f64);
    }

    fn renewed(&mut self, symbol: &Symbol, renewed: Option<u64>) {
        let venue = self.venue();
        let Some(cluster) = self.cluster.as_mut() else { return };
        let Some(Role::Held { revision, renewing, .. }) = cluster.roles.get_mut(symbol) else {
            return;
        };
        *renewing = false;
        match renewed {
            Some(next) => *revision = next,
            None => {
                tracing::warn!(venue = %venue, %symbol, "market-data lease lost; following the new holder");
                let Some(out) = cluster.received.clone() else { return };
                let follower = cluster.cluster.follow(venue, symbol.clone(), out);
                let role = Role::Following {
                    _follower: follower,
                    seen: Seen::default(),
                    acquiring: false,
                };
                cluster.roles.insert(symbol.clone(), role);
                self.reconcile();
            }
        }
    }

    fn acquired(&mut self, symbol: &Symbol, taken: Option<u64>) {
        let venue = self.venue();
        let Some(cluster) = self.cluster.as_mut() else { return };
        let Some(Role::Following { acquiring, seen, .. }) = cluster.roles.get_mut(symbol) else {
            return;
        };
        *acquiring = false;
        let Some(lease) = taken else { return };
        let followed = seen.any();
        tracing::info!(venue = %venue, %symbol, lease, node = cluster.cluster.node_id(), "market-data lease taken; connecting to the exchange");
        let trades = RecentTrades::default();
        let role = Role::Held { lease, revision: lease, seq: 0, renewing: false, trades };
        cluster.roles.insert(symbol.clone(), role);
        self.reconcile();
        if followed {
            // What the old holder saw between its last relayed event and now is lost.
            metrics::counter!("keel_cluster_md_gaps_total", "venue" => venue.as_str()).increment(1);
            self.gap_symbol(symbol, "the exchange connection moved to this node");
        }
    }

    /// The graceful stop's part in cluster mode: the symbols this node holds are dropped (nothing
    /// more is relayed or subscribed at the exchange for them), then their leases are released,
    /// so other nodes take over at their next lease round (within [`LEASE_EVERY`]) instead of
    /// after the lease TTL. `None` when nothing is held. A node killed outright releases
    /// nothing: its leases expire.
    pub(super) fn release_leases(&mut self) -> Option<impl Future<Output = ()> + 'static> {
        let venue = self.venue();
        let cluster = self.cluster.as_mut()?;
        let held: Vec<(Symbol, u64)> = cluster
            .roles
            .iter()
            .filter_map(|(symbol, role)| match role {
                Role::Held { revision, .. } => Some((symbol.clone(), *revision)),
                Role::Following { .. } => None,
            })
            .collect();
        if held.is_empty() {
            return None;
        }
        for (symbol, _) in &held {
            cluster.roles.remove(symbol);
        }
        let handle = cluster.cluster.clone();
        self.reconcile();
        metrics::gauge!("keel_cluster_leases_held", "venue" => venue.as_str()).set(0.0);
        let releases = held.into_iter().map(move |(symbol, revision)| {
            let key = Cluster::lease_key(venue, &symbol);
            handle.clone().release(key, revision)
        });
        Some(async move {
            let all = futures_util::future::join_all(releases);
            match tokio::time::timeout(RELEASE_WITHIN, all).await {
                Ok(released) => {
                    let count = released.iter().filter(|r| **r).count();
                    tracing::info!(venue = %venue, released = count, of = released.len(), "market-data leases released");
                }
                Err(_) => {
                    tracing::warn!(venue = %venue, "releasing market-data leases took too long; they expire");
                }
            }
        })
    }

    /// Relays an event from the exchange when this node holds its symbol.
    pub(super) fn relay(&mut self, event: &MarketEvent) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let Some(Role::Held { lease, seq, trades, .. }) = cluster.roles.get_mut(&event.symbol)
        else {
            return;
        };
        if trades.repeated(event) {
            return;
        }
        *seq += 1;
        let subject = cluster.cluster.subject(event.venue, &event.symbol, &event.kind);
        cluster.relay.publish(subject, cluster.cluster.node_id(), *lease, *seq, event);
    }
}

impl StreamHandler<Received> for FeedActor {
    fn handle(&mut self, received: Received, _: &mut Context<Self>) {
        let venue = self.venue();
        let Some(cluster) = self.cluster.as_mut() else { return };
        // Late events of a symbol this node now holds (or no longer wants) are not delivered.
        let Some(Role::Following { seen, .. }) = cluster.roles.get_mut(&received.symbol) else {
            return;
        };
        let verdict = seen.check(received.lease, received.seq, &received.event);
        metrics::counter!("keel_cluster_md_received_total", "venue" => venue.as_str()).increment(1);
        match verdict {
            Verdict::Duplicate => {
                metrics::counter!("keel_cluster_md_duplicates_total", "venue" => venue.as_str())
                    .increment(1);
                return;
            }
            Verdict::AfterGap(reason) => {
                metrics::counter!("keel_cluster_md_gaps_total", "venue" => venue.as_str())
                    .increment(1);
                tracing::warn!(venue = %venue, symbol = %received.symbol, %reason, "gap in relayed market data");
                self.gap_symbol(&received.symbol, &reason);
            }
            Verdict::Deliver => {}
        }
        match received.event.kind {
            EventKind::Gap { reason } => self.gap_symbol(&received.symbol, &reason),
            // `received_us` stays the holder's: latency figures include the hop.
            _ => self.dispatch(received.event),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}
