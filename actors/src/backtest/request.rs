//! A backtest as a user asks for one (`POST /api/v1/backtests`), and its validation into a
//! [`JobSpec`]: the settings, and the trade files it reads (an upload of the user's or a range
//! of the feeds' recordings).
//!
//! Validation looks at the file system: callers run [`NewBacktest::into_job`] on a blocking
//! thread.

use std::io;
use std::path::{Path, PathBuf};

use keel_core::bot::{Bracket, MAX_LEVERAGE, MarginType};
use keel_core::market::{Symbol, VenueId};
use keel_core::strategy::StrategySpec;
use keel_core::trading::margin::{DEFAULT_MAINTENANCE_MARGIN_RATE, FuturesConfig};
use keel_core::trading::risk::RiskLimits;
use keel_core::validation::FieldError;
use keel_venues::sim::Instrument;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::BacktestConfig;
use super::jobs::JobSpec;
use super::upload::{is_upload_id, upload_path};

/// Most daily recordings one backtest may read.
const MAX_RECORDED_DAYS: usize = 366;
/// Slippage of market orders without a quote, as `keel backtest` uses.
const SLIPPAGE_BPS: i64 = 5;

/// `POST /backtests` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBacktest {
    /// The strategy and its parameters.
    strategy: StrategySpec,
    /// The instrument (rules from the sim venue's table) and, for recordings, whose files.
    #[serde(default = "default_symbol")]
    #[schema(default = "BTCUSDT")]
    symbol: String,
    /// Fee per fill, basis points, 0 to 1000.
    #[serde(default = "default_fee_bps")]
    #[schema(default = "10")]
    fee_bps: Decimal,
    /// Starting quote balance.
    #[serde(default = "default_starting_quote")]
    #[schema(default = "10000")]
    starting_quote: Decimal,
    /// OCO bracket around every filled entry.
    #[serde(default)]
    bracket: Option<Bracket>,
    /// Paper futures: trade with leverage (both directions), pay funding (at a fixed rate every
    /// 8 hours from 00:00 UTC, or as the recording's mark prices say), and liquidate the position when the price crosses its
    /// liquidation price (the strategy stops there). Absent: spot.
    #[serde(default)]
    futures: Option<BacktestFutures>,
    /// Skip rows that cannot be read instead of failing.
    #[serde(default)]
    skip_bad_rows: bool,
    /// Where the trades come from.
    data: DataSource,
}

/// A leveraged backtest's settings.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestFutures {
    /// Notional over margin, 1 to 125.
    leverage: u32,
    /// `isolated` (a liquidation loses the position's margin) or `cross` (the whole balance).
    #[serde(default = "default_margin_type")]
    #[schema(default = "isolated")]
    margin_type: MarginType,
    /// Funding rate applied at each funding time (a long pays a positive rate), -0.03 to 0.03.
    /// Absent: the rates and funding times a recording's mark prices published (`sim_perp`,
    /// `binance_futures`, `bybit_linear` recordings), and no funding where there are none.
    #[serde(default)]
    funding_rate: Option<Decimal>,
    /// Maintenance margin rate, above 0 and below 1.
    #[serde(default = "default_maintenance_margin_rate")]
    #[schema(default = "0.004")]
    maintenance_margin_rate: Decimal,
}

fn default_margin_type() -> MarginType {
    MarginType::Isolated
}

fn default_maintenance_margin_rate() -> Decimal {
    DEFAULT_MAINTENANCE_MARGIN_RATE
}

impl BacktestFutures {
    fn config(&self, symbol: &Symbol) -> FuturesConfig {
        let mut futures = FuturesConfig::new(self.leverage, self.margin_type);
        futures.funding_rate = self.funding_rate;
        futures.maintenance_margin_rate = self.maintenance_margin_rate;
        if let Some(quote) = keel_core::bot::funding::quote_asset(symbol.as_str()) {
            futures.quote_asset = quote.to_owned();
        }
        futures
    }

    fn check(&self, details: &mut Vec<FieldError>) {
        if !(1..=MAX_LEVERAGE).contains(&self.leverage) {
            details
                .push(FieldError::new("futures.leverage", format!("must be 1 to {MAX_LEVERAGE}")));
        }
        let cap = Decimal::new(3, 2);
        if self.funding_rate.is_some_and(|rate| rate.abs() > cap) {
            details.push(FieldError::new("futures.funding_rate", "must be between -0.03 and 0.03"));
        }
        if self.maintenance_margin_rate <= Decimal::ZERO
            || self.maintenance_margin_rate >= Decimal::ONE
        {
            details.push(FieldError::new(
                "futures.maintenance_margin_rate",
                "must be above 0 and below 1",
            ));
        }
    }
}

/// Where the trades come from: exactly one of the two.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// An id from `POST /backtests/uploads`.
    #[serde(default)]
    upload_id: Option<String>,
    /// A range of the feeds' recordings.
    #[serde(default)]
    recorded: Option<RecordedRange>,
}

/// Recordings of a venue (and the body's symbol), from one UTC day to another, inclusive.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordedRange {
    /// The venue whose recordings to read.
    venue: String,
    /// First UTC day, `YYYY-MM-DD`.
    #[schema(format = Date)]
    from: String,
    /// Last UTC day, `YYYY-MM-DD`.
    #[schema(format = Date)]
    to: String,
}

fn default_symbol() -> String {
    "BTCUSDT".into()
}

fn default_fee_bps() -> Decimal {
    Decimal::TEN
}

fn default_starting_quote() -> Decimal {
    Decimal::from(10_000)
}

impl NewBacktest {
    /// Validates the request into a job: every bad field is reported together. `uploads` is
    /// the user's upload directory, `record_dir` the feeds' recordings.
    ///
    /// # Errors
    /// The outer error when the file system fails; the inner one with the field errors.
    pub fn into_job(
        self,
        uploads: &Path,
        record_dir: &Path,
    ) -> io::Result<Result<JobSpec, Vec<FieldError>>> {
        let symbol = Symbol::parse(&self.symbol);
        let mut details = self.check_settings(symbol.as_ref());
        let files = self.data.files(uploads, record_dir, symbol.as_ref(), &mut details)?;
        let Some(symbol) = symbol.filter(|_| details.is_empty()) else {
            return Ok(Err(details));
        };
        Ok(Ok(JobSpec {
            config: BacktestConfig {
                bot_id: 0,
                filters: Instrument::for_symbol(symbol.clone()).filters(),
                strategy: self.strategy,
                risk: RiskLimits::default(),
                bracket: self.bracket,
                fee_bps: self.fee_bps,
                slippage_bps: Decimal::from(SLIPPAGE_BPS),
                starting_quote: self.starting_quote,
                futures: self.futures.as_ref().map(|f| f.config(&symbol)),
            },
            files,
            symbol,
            skip_bad_rows: self.skip_bad_rows,
        }))
    }

    /// Checks the body's settings; the field errors found.
    fn check_settings(&self, symbol: Option<&Symbol>) -> Vec<FieldError> {
        let mut details = Vec::new();
        if symbol.is_none() {
            details.push(FieldError::new("symbol", "must be 2 to 20 letters and digits"));
        }
        if self.fee_bps < Decimal::ZERO || self.fee_bps > Decimal::from(1000) {
            details.push(FieldError::new("fee_bps", "must be between 0 and 1000"));
        }
        if self.starting_quote <= Decimal::ZERO
            || self.starting_quote > Decimal::from(1_000_000_000_000u64)
        {
            details.push(FieldError::new("starting_quote", "must be above 0 and at most 1e12"));
        }
        if let Some(futures) = &self.futures {
            futures.check(&mut details);
        }
        if let Some(b) = &self.bracket {
            if b.take_profit_pct <= Decimal::ZERO || b.take_profit_pct > Decimal::from(1000) {
                details.push(FieldError::new(
                    "bracket.take_profit_pct",
                    "must be above 0 and at most 1000",
                ));
            }
            if b.stop_loss_pct <= Decimal::ZERO || b.stop_loss_pct >= Decimal::ONE_HUNDRED {
                details.push(FieldError::new(
                    "bracket.stop_loss_pct",
                    "must be above 0 and below 100",
                ));
            }
        }
        if let Some(symbol) = symbol {
            let filters = Instrument::for_symbol(symbol.clone()).filters();
            if let Err(errors) = keel_core::strategy::build(&self.strategy, &filters) {
                details.extend(errors);
            }
        }
        details
    }
}

impl DataSource {
    /// The files the job reads, or field errors saying why there are none.
    fn files(
        &self,
        uploads: &Path,
        record_dir: &Path,
        symbol: Option<&Symbol>,
        details: &mut Vec<FieldError>,
    ) -> io::Result<Vec<PathBuf>> {
        match (&self.upload_id, &self.recorded) {
            (Some(id), None) => {
                if !is_upload_id(id) {
                    details.push(FieldError::new("data.upload_id", "is not an upload id"));
                    return Ok(Vec::new());
                }
                let path = upload_path(uploads, id);
                if path.is_file() {
                    Ok(vec![path])
                } else {
                    details.push(FieldError::new(
                        "data.upload_id",
                        format!("no upload {id} of yours"),
                    ));
                    Ok(Vec::new())
                }
            }
            (None, Some(range)) => range.files(record_dir, symbol, details),
            _ => {
                details.push(FieldError::new(
                    "data",
                    "give exactly one of `upload_id` and `recorded`",
                ));
                Ok(Vec::new())
            }
        }
    }
}

impl RecordedRange {
    /// The daily recordings in the range, or field errors.
    fn files(
        &self,
        record_dir: &Path,
        symbol: Option<&Symbol>,
        details: &mut Vec<FieldError>,
    ) -> io::Result<Vec<PathBuf>> {
        let venue = VenueId::parse(&self.venue);
        if venue.is_none() {
            details.push(FieldError::new("data.recorded.venue", "is not a venue"));
        }
        for (field, date) in [("data.recorded.from", &self.from), ("data.recorded.to", &self.to)] {
            if !crate::record::is_date(date) {
                details.push(FieldError::new(field, "must be a date YYYY-MM-DD"));
            }
        }
        if !details.is_empty() {
            return Ok(Vec::new());
        }
        if self.from > self.to {
            details.push(FieldError::new("data.recorded.to", "must not be before `from`"));
            return Ok(Vec::new());
        }
        let (Some(venue), Some(symbol)) = (venue, symbol) else {
            return Ok(Vec::new());
        };
        let files = crate::record::files_between(record_dir, venue, symbol, &self.from, &self.to)?;
        if files.is_empty() {
            let message =
                format!("no recordings of {venue} {symbol} from {} to {}", self.from, self.to);
            details.push(FieldError::new("data.recorded", message));
        } else if files.len() > MAX_RECORDED_DAYS {
            details.push(FieldError::new(
                "data.recorded",
                format!("spans more than {MAX_RECORDED_DAYS} days of recordings"),
            ));
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(body: serde_json::Value) -> NewBacktest {
        serde_json::from_value(body).unwrap()
    }

    fn strategy() -> serde_json::Value {
        json!({"kind": "ema_cross", "params": {"fast": 5, "slow": 20, "qty": "0.001"}})
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn every_bad_setting_is_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        let body = request(json!({
            "strategy": strategy(), "symbol": "BTC-USDT", "fee_bps": "2000",
            "starting_quote": "0", "bracket": {"take_profit_pct": "0", "stop_loss_pct": "100"},
            "data": {"upload_id": "nope"},
        }));
        let errors = body.into_job(dir.path(), dir.path()).unwrap().unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "symbol",
                "fee_bps",
                "starting_quote",
                "bracket.take_profit_pct",
                "bracket.stop_loss_pct",
                "data.upload_id"
            ]
        );
    }

    #[test]
    fn the_data_source_must_be_exactly_one_existing_thing() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (json!({}), "data", "give exactly one"),
            (json!({"upload_id": "0".repeat(32)}), "data.upload_id", "no upload"),
            (
                json!({"recorded": {"venue": "sim", "from": "2026-10-02", "to": "2026-10-01"}}),
                "data.recorded.to",
                "before",
            ),
            (
                json!({"recorded": {"venue": "sim", "from": "2026-10-01", "to": "2026-10-01"}}),
                "data.recorded",
                "no recordings of sim BTCUSDT",
            ),
            (
                json!({"recorded": {"venue": "mars", "from": "yesterday", "to": "2026-10-01"}}),
                "data.recorded.venue",
                "is not a venue",
            ),
        ];
        for (data, field, message) in cases {
            let body = request(json!({"strategy": strategy(), "data": data}));
            let errors = body.into_job(dir.path(), dir.path()).unwrap().unwrap_err();
            assert_eq!(errors[0].field, field, "{errors:?}");
            assert!(errors[0].message.contains(message), "{errors:?}");
        }
    }

    #[test]
    fn an_existing_upload_makes_a_job_with_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        std::fs::write(upload_path(dir.path(), id), "ts,price,qty\n").unwrap();
        let body = request(json!({"strategy": strategy(), "data": {"upload_id": id}}));
        let job = body.into_job(dir.path(), dir.path()).unwrap().unwrap();
        assert_eq!(job.files, [upload_path(dir.path(), id)]);
        assert_eq!(job.symbol.to_string(), "BTCUSDT");
        assert_eq!(job.config.fee_bps, Decimal::TEN);
        assert_eq!(job.config.slippage_bps, Decimal::from(SLIPPAGE_BPS));
        assert_eq!(job.config.starting_quote, Decimal::from(10_000));
    }
}
