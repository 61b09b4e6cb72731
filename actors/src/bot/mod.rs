//! Bots: one actor per bot running a strategy on the shared feed, trading through the paper
//! engine, surviving crashes with its money intact.
//!
//! - [`model`]: the bot definition and its lifecycle state machine;
//! - [`engine`]: the pure trading core (strategy, risk, orders, brackets, paper fills);
//! - [`repo`]: how bots, orders, fills, state and journal are stored;
//! - [`exposure`]: per-user exposure across bots;
//! - [`live`]: a live bot's signed REST link to its venue;
//! - [`actor`]: `BotActor`, one running bot;
//! - [`supervisor`]: `BotSupervisor`, which owns definitions and restarts bot actors.

pub mod actor;
pub mod engine;
pub mod exposure;
pub mod live;
pub mod model;
pub mod performance;
pub mod repo;
pub mod supervisor;

pub use actor::{LiveView, TradeCommand, TradeError, TradeOutcome};
pub use engine::{BotEngine, BotEvent, BotEventKind, BotState, EngineConfig};
pub use model::{BotId, BotMode, BotRecord, BotStatus, Bracket, Control, PaperSettings};
pub use repo::{BotRepo, Page};
pub use supervisor::{BotError, BotSupervisor, BotsAddress, BotsConfig, BotsSpec, LiveVenues};
