//! Bots: one actor per bot running a strategy on the shared feed, trading through the paper
//! engine, surviving crashes with its money intact.
//!
//! The bot definition and the pure trading core it runs are `keel_core::bot` and
//! `keel_core::engine`.
//!
//! - [`repo`]: how bots, orders, fills, state and journal are stored in sled;
//! - [`pg`]: the same in the cluster's Postgres (cluster mode with `postgres_url`);
//! - [`exposure`]: per-user exposure across bots;
//! - [`user_limits`]: owners' own limits over all of their bots, stored with the user;
//! - [`indicators`]: the indicator series bots publish, a bounded ring per bot;
//! - [`live`]: a live bot's signed REST link to its venue;
//! - `live_list`: the same for a native bracket's order list (both legs in one request);
//! - [`actor`]: `BotActor`, one running bot;
//! - [`admission`]: checking a new or edited definition against the venue's feed and the vault;
//! - [`supervisor`]: `BotSupervisor`, which owns definitions and restarts bot actors;
//! - [`view`]: `BotsView`, each owner's bot list as the supervisor last published it, read by
//!   the API without a message.

pub mod actor;
pub mod admission;
pub mod exposure;
pub mod funding;
pub mod indicators;
pub mod live;
mod live_list;
pub mod pg;
pub mod repo;
pub mod supervisor;
pub mod user_limits;
pub mod view;

pub use actor::{LiveView, TradeCommand, TradeError, TradeOutcome};
pub use keel_core::bot::{BotId, BotMode, BotRecord, BotStatus, Bracket, Control, PaperSettings};
pub use keel_core::engine::{BotEngine, BotEvent, BotEventKind, BotState, EngineConfig};
pub use repo::{BotRepo, Page};
pub use supervisor::{
    BotError, BotSupervisor, BotsAddress, BotsConfig, BotsSpec, DISK_LOW_REASON, DiskSpace,
    GetRelaunch, LiveVenues, RelaunchReport, SetUserRisk,
};
pub use user_limits::UserLimits;
pub use view::{BotsView, OwnedBots};
