//! The feed's side of a venue generated in process: on every tick it asks the venue's
//! [`Simulator`](keel_venues::market::Simulator) for the events owed to each active symbol, or
//! plays the replay file instead when one is configured ([`super::replay`]).

use std::time::Duration;

use super::FeedActor;
use super::messages::MarketData;
use keel_core::market::Symbol;
use keel_venues::now_us;

/// Most simulated time one tick generates, seconds.
const MAX_SIM_CATCH_UP: f64 = 0.05;

impl FeedActor {
    /// Plays the replay's events owed for `elapsed`: each delivered to every subscriber, in
    /// order, with nothing conflated or dropped.
    pub(super) fn play_replay(&mut self, elapsed: Duration) {
        let Some(replay) = self.replay.as_mut() else { return };
        replay.drain_backlog(&mut self.streams);
        let budget = replay.budget(elapsed.as_secs_f64());
        let mut touched: Vec<Symbol> = Vec::new();
        for _ in 0..budget {
            let Some(replay) = self.replay.as_mut() else { return };
            let Some(mut event) = replay.next_event(&self.streams) else { break };
            event.venue = self.venue();
            event.received_us = now_us();
            if !touched.contains(&event.symbol) {
                touched.push(event.symbol.clone());
            }
            let (event, kind) = self.observe(event);
            let Some(kind) = kind else { continue };
            let id = (event.symbol.clone(), kind);
            if let (Some(replay), Some(stream)) = (self.replay.as_mut(), self.streams.get_mut(&id))
            {
                replay.deliver(&id, stream, &MarketData(event));
            }
        }
        let now_ms = now_us() / 1000;
        for symbol in touched {
            self.publish_candle(&symbol, now_ms);
        }
    }

    /// Generates the simulated events owed for `elapsed` to every active symbol.
    pub(super) fn generate(&mut self, elapsed: Duration) {
        let Some(rate) = self.simulator.as_ref().map(|s| s.trades_per_sec()) else {
            return;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for symbol in self.active_symbols() {
            let debt = self.sim_debt.entry(symbol.clone()).or_default();
            // A tick that ran late does not try to make up for all of it: on a slow machine that
            // spirals (each catch-up makes the next tick later still) and starves the arbiter.
            *debt = (*debt + rate * elapsed.as_secs_f64()).min((rate * MAX_SIM_CATCH_UP).max(1.0));
            let due = debt.floor() as u64;
            *debt -= due as f64;
            for _ in 0..due {
                let Some(simulator) = self.simulator.as_mut() else { return };
                let Some(events) = simulator.step(&symbol, now_ms, now_us()) else { break };
                for event in events {
                    self.dispatch(event);
                }
            }
            if due > 0 {
                self.publish_candle(&symbol, now_ms);
            }
        }
    }
}
