//! Recording market data: every normalised event a feed handles, per venue, symbol and UTC day,
//! in a compact append-only file that survives a crash mid-write.
//!
//! - [`format`]: the file format (length-prefixed records with a CRC-32, torn tails detected);
//! - [`writer`]: the [`Recorder`] handle feeds `try_send` to, and the writer thread behind it.
//!
//! Backtests read recordings with [`crate::backtest::input::TradeReader`], and the sim venue
//! can replay one instead of its random walk.

pub mod format;
pub mod writer;

pub use writer::{Recorder, file_path, files_between, is_date, utc_date};
