//! Indicator series a strategy publishes, so that a chart can draw what the strategy sees.
//!
//! A strategy declares its series once, when built ([`Strategy::series`]): a name, the pane it is
//! drawn in and its style. After each call the engine reads the latest values
//! ([`Strategy::series_values`]) and reports those that changed as an [`IndicatorUpdate`] in the
//! call's effects; the runtime keeps a bounded history per series and streams the update.
//!
//! [`Strategy::series`]: super::Strategy::series
//! [`Strategy::series_values`]: super::Strategy::series_values

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};

/// Longest series name.
pub const MAX_NAME_LEN: usize = 64;

/// Most series one strategy may publish.
pub const MAX_SERIES: usize = 64;

/// Where a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pane {
    /// Over the price chart.
    Price,
    /// In its own panel below the price chart.
    Own,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeriesStyle {
    /// A time series.
    Line,
    /// A horizontal price level; its latest value is drawn across the chart.
    Level,
}

/// A series' metadata, fixed when the strategy is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeriesSpec {
    /// Snake-case name, unique within the strategy (`ema_fast`, `rsi`, `grid_level_3`).
    #[schema(example = "ema_fast")]
    pub name: String,
    /// Where it is drawn.
    pub pane: Pane,
    /// How it is drawn.
    pub style: SeriesStyle,
    /// Lower bound of an own pane's scale (RSI: 0).
    pub min: Option<f64>,
    /// Upper bound of an own pane's scale (RSI: 100).
    pub max: Option<f64>,
}

impl SeriesSpec {
    /// A series drawn over the price chart as a line.
    pub fn price_line(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            pane: Pane::Price,
            style: SeriesStyle::Line,
            min: None,
            max: None,
        }
    }

    /// A horizontal price level.
    pub fn price_level(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            pane: Pane::Price,
            style: SeriesStyle::Level,
            min: None,
            max: None,
        }
    }

    /// A line in its own pane, with an optional fixed scale.
    pub fn own_line(name: impl Into<String>, min: Option<f64>, max: Option<f64>) -> Self {
        Self { name: name.into(), pane: Pane::Own, style: SeriesStyle::Line, min, max }
    }

    /// Why a name is not acceptable, if it is not: snake case (`[a-z][a-z0-9_]*`), at most
    /// [`MAX_NAME_LEN`] bytes.
    pub fn name_problem(name: &str) -> Option<&'static str> {
        let mut bytes = name.bytes();
        match bytes.next() {
            None => return Some("is empty"),
            Some(b) if !b.is_ascii_lowercase() => return Some("must start with a-z"),
            Some(_) => {}
        }
        if name.len() > MAX_NAME_LEN {
            return Some("is longer than 64 bytes");
        }
        if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Some("may hold only a-z, 0-9 and _");
        }
        None
    }
}

/// The series values one call changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndicatorUpdate {
    /// Event time of the call, ms since the epoch.
    pub ts: u64,
    /// (index into the strategy's series, new value), in series order.
    pub values: Vec<(usize, Decimal)>,
}

/// An indicator's `f64` as the decimal a chart gets: 10 significant digits at most, trailing
/// zeros dropped. `None` for NaN and infinities.
pub fn value_of(x: f64) -> Option<Decimal> {
    if !x.is_finite() {
        return None;
    }
    let magnitude = if x == 0.0 { 0 } else { x.abs().log10().floor() as i32 };
    let dp = (9 - magnitude).clamp(0, 12) as u32;
    Decimal::from_f64(x).map(|d| d.round_dp(dp).normalize())
}

/// Tracks the last published value of each series and finds what changed.
#[derive(Debug, Clone, Default)]
pub struct SeriesTracker {
    last: Vec<Option<Decimal>>,
    scratch: Vec<Option<Decimal>>,
}

impl SeriesTracker {
    /// A tracker for `count` series, none published yet.
    pub fn new(count: usize) -> Self {
        Self { last: vec![None; count], scratch: vec![None; count] }
    }

    /// The values to fill in (all `None` on entry); then call [`SeriesTracker::changes`].
    pub fn slots(&mut self) -> &mut [Option<Decimal>] {
        self.scratch.iter_mut().for_each(|v| *v = None);
        &mut self.scratch
    }

    /// The values that differ from the last published ones (a series that has no value now keeps
    /// its last one), remembered as published.
    pub fn changes(&mut self, ts: u64) -> Option<IndicatorUpdate> {
        let mut update: Option<IndicatorUpdate> = None;
        for (i, (now, last)) in self.scratch.iter().zip(self.last.iter_mut()).enumerate() {
            if let Some(value) = *now
                && *last != Some(value)
            {
                *last = Some(value);
                update
                    .get_or_insert_with(|| IndicatorUpdate { ts, values: Vec::new() })
                    .values
                    .push((i, value));
            }
        }
        update
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_snake_case_and_bounded() {
        for ok in ["ema_fast", "rsi", "grid_level_3", "a"] {
            assert_eq!(SeriesSpec::name_problem(ok), None, "{ok}");
        }
        for bad in ["", "EMA", "1st", "ema-fast", "ema fast", &"x".repeat(65)] {
            assert!(SeriesSpec::name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn values_keep_ten_significant_digits() {
        assert_eq!(value_of(98012.43219876543).unwrap().to_string(), "98012.4322");
        assert_eq!(value_of(0.000123456789123).unwrap().to_string(), "0.000123456789");
        assert_eq!(value_of(50.0).unwrap().to_string(), "50");
        assert_eq!(value_of(0.0).unwrap().to_string(), "0");
        assert_eq!(value_of(f64::NAN), None);
        assert_eq!(value_of(f64::INFINITY), None);
    }

    #[test]
    fn only_changed_values_are_reported_once() {
        let mut t = SeriesTracker::new(2);
        assert_eq!(t.changes(1), None);
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        t.slots()[0] = Some(d("1"));
        assert_eq!(t.changes(2), Some(IndicatorUpdate { ts: 2, values: vec![(0, d("1"))] }));
        let slots = t.slots();
        slots[0] = Some(d("1"));
        slots[1] = Some(d("5"));
        assert_eq!(t.changes(3), Some(IndicatorUpdate { ts: 3, values: vec![(1, d("5"))] }));
        // Unchanged, or gone quiet: nothing to report.
        t.slots()[1] = Some(d("5"));
        assert_eq!(t.changes(4), None);
        assert_eq!(t.changes(5), None);
    }
}
