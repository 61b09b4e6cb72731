//! Settings → [`RuntimeConfig`]: what the actor runtime is built from, read off the sections.
//! The runtime itself (`keel_actors::runtime`) reads no configuration.

use std::time::Duration;

use keel_actors::backtest::jobs::JobsConfig;
use keel_actors::feed::ReplayConfig;
use keel_actors::runtime::{BotLimits, FeedTiming, Mailboxes, RecordConfig, RuntimeConfig};
use keel_actors::store::StoreConfig;
use keel_actors::store::retention::RetentionConfig;
use keel_actors::supervisor::RestartPolicy;
use keel_actors::vault::KeyRing;
use keel_core::market::Symbol;

use super::{ArchiveMode, Settings};

impl Settings {
    /// The runtime's configuration, with the vault's `key_ring` (resolved by `secrets`).
    ///
    /// # Errors
    /// A venue's section does not suit its connector.
    pub fn runtime_config(&self, key_ring: KeyRing) -> anyhow::Result<RuntimeConfig> {
        let mailboxes = &self.mailboxes;
        Ok(RuntimeConfig {
            wasm: self.wasm.config(),
            // Set by the application once it has the cluster's Postgres and its user leases.
            bots_in_postgres: None,
            store: self.store_config(),
            policy: RestartPolicy {
                max_restarts: self.supervisor.max_restarts,
                period: Duration::from_secs(self.supervisor.period_secs),
            },
            mailboxes: Mailboxes {
                supervisor: mailboxes.supervisor,
                bot_supervisor: mailboxes.bot_supervisor,
                bot: mailboxes.bot,
                feed: mailboxes.feed,
                vault: mailboxes.vault,
                session: mailboxes.session,
            },
            key_ring,
            max_credentials_per_user: self.vault.max_credentials_per_user,
            markets: crate::venues::markets(self)?,
            cluster: self.cluster.cluster_config(),
            routers: crate::venues::routers(self)?,
            feeds: FeedTiming {
                warm_for: Duration::from_secs(self.feed.warm_secs),
                first_data_wait: Duration::from_millis(self.feed.first_data_wait_ms),
            },
            sim_replay: self.sim_replay(),
            record: self
                .record
                .enabled
                .then(|| RecordConfig { dir: self.record_dir(), queue: self.record.queue }),
            bots: BotLimits {
                arbiters: match self.bots.arbiters {
                    0 => std::thread::available_parallelism().map_or(1, usize::from),
                    n => n,
                },
                max_per_user: self.bots.max_per_user,
                paper_slippage_bps: self.bots.paper_slippage_bps,
                max_user_exposure: Some(self.bots.max_user_exposure).filter(|l| !l.is_zero()),
                max_leverage: self.bots.max_leverage,
                breaker: self.bots.breaker(),
                indicator_points: self.bots.indicator_points,
            },
            sink: self.sink.postgres.sink_config(),
            notifications: self.notifications.notify_config(),
            backtests: JobsConfig {
                workers: match self.backtests.workers {
                    0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
                    n => n,
                },
                queue: self.backtests.queue,
                max_per_user: self.backtests.max_per_user,
                keep_finished: self.backtests.keep_finished,
            },
            retention: self.retention_config(),
        })
    }

    /// Where and how the store is opened.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            path: self.store.path.clone(),
            cache_capacity_bytes: self.store.cache_capacity_mb * 1024 * 1024,
            background_flush: (self.store.background_flush_ms > 0)
                .then(|| Duration::from_millis(self.store.background_flush_ms)),
            min_free_bytes: self.store.min_free_bytes,
        }
    }

    /// How long history is kept, and where removed rows go.
    pub fn retention_config(&self) -> RetentionConfig {
        let r = &self.retention;
        let archive_dir = match r.archive {
            ArchiveMode::None => None,
            ArchiveMode::Files if r.archive_dir.as_os_str().is_empty() => {
                Some(self.store.path.join("archive"))
            }
            ArchiveMode::Files => Some(r.archive_dir.clone()),
        };
        RetentionConfig {
            fills_max_age: r.fills_max_age(),
            orders_max_age: r.orders_max_age(),
            bot_events_max_age: r.bot_events_max_age(),
            recordings_days: r.recordings_days,
            archive_dir,
            record_dir: Some(self.record_dir()),
            every: Duration::from_secs(r.sweep_interval_secs),
        }
    }

    /// The sim venue's replay, when `venues.sim.replay` names a file (CSV rows play on its first
    /// symbol).
    fn sim_replay(&self) -> Option<ReplayConfig> {
        let sim = &self.venues.sim;
        if sim.replay.as_os_str().is_empty() {
            return None;
        }
        let symbol = sim.symbols.iter().find_map(|s| Symbol::parse(s))?;
        Some(ReplayConfig {
            path: sim.replay.clone(),
            symbol,
            events_per_sec: sim.replay_events_per_sec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_gets_every_enabled_venue_and_the_sections_values() {
        let vars = [
            ("KEEL__STORE__CACHE_CAPACITY_MB", "8"),
            ("KEEL__STORE__BACKGROUND_FLUSH_MS", "0"),
            ("KEEL__BOTS__ARBITERS", "3"),
            ("KEEL__VENUES__BINANCE__ENABLED", "true"),
        ];
        let vars = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let settings = Settings::load_with_env(None, vars).unwrap();
        let key_ring = KeyRing::new(keel_actors::vault::MasterKey::generate().unwrap());
        let config = settings.runtime_config(key_ring).unwrap();
        assert_eq!(config.store.cache_capacity_bytes, 8 * 1024 * 1024);
        assert_eq!(config.store.background_flush, None);
        assert_eq!(config.bots.arbiters, 3);
        let venues: Vec<String> = config.markets.iter().map(|m| m.venue().to_string()).collect();
        assert!(venues.contains(&"sim".to_owned()) && venues.contains(&"binance".to_owned()));
        assert!(config.sim_replay.is_none() && config.record.is_none() && config.sink.is_none());
    }
}
