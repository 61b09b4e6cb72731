//! The indicator series bots publish: a bounded ring of points per series, per bot, in memory.
//!
//! A bot actor opens its bot's [`IndicatorRing`] in the shared [`IndicatorBook`] as it starts
//! (a restarted actor with the same series keeps the history) and appends each
//! [`IndicatorUpdate`] its engine reports. `GET /bots/{id}/indicators` reads the book through
//! the bot supervisor, which checks ownership. Indicators are not journal lines: they are not
//! stored, and a process restart begins them afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rust_decimal::Decimal;
use serde::Serialize;

use keel_core::bot::BotId;
use keel_core::strategy::{IndicatorUpdate, Pane, SeriesSpec, SeriesStyle};

/// Points kept per series unless configured (`bots.indicator_points`).
pub const DEFAULT_POINTS: usize = 2_000;

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Point {
    /// Event time, ms since the epoch.
    pub ts: u64,
    /// The value, as a decimal string.
    #[schema(value_type = String, example = "98012.4")]
    pub value: Decimal,
}

/// A series with its points, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    /// Snake-case name.
    pub name: String,
    /// `price` (over the price chart) or `own` (its own panel).
    pub pane: Pane,
    /// `line` (a time series) or `level` (a horizontal price level: draw the latest value).
    pub style: SeriesStyle,
    /// Lower bound of an own pane's scale.
    pub min: Option<f64>,
    /// Upper bound of an own pane's scale.
    pub max: Option<f64>,
    /// Points, oldest first.
    pub points: Vec<Point>,
}

/// `GET /bots/{id}/indicators`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IndicatorsView {
    /// The bot.
    pub bot_id: BotId,
    /// Its strategy's series, in the strategy's order (empty before the bot first ran in this
    /// process).
    pub series: Vec<SeriesView>,
}

/// One bot's series and their recent points.
#[derive(Debug)]
pub struct IndicatorRing {
    series: Vec<SeriesSpec>,
    points: Vec<VecDeque<Point>>,
    capacity: usize,
}

impl IndicatorRing {
    fn new(series: Vec<SeriesSpec>, capacity: usize) -> Self {
        let points = series.iter().map(|_| VecDeque::new()).collect();
        Self { series, points, capacity: capacity.max(1) }
    }

    /// Appends an update's values, dropping the oldest points past the capacity.
    pub fn push(&mut self, update: &IndicatorUpdate) {
        for &(index, value) in &update.values {
            let Some(points) = self.points.get_mut(index) else { continue };
            if points.len() == self.capacity {
                points.pop_front();
            }
            points.push_back(Point { ts: update.ts, value });
        }
    }

    /// The series with their points at or after `since` (ms), at most `limit` per series, the
    /// newest ones.
    pub fn view(&self, since: u64, limit: usize) -> Vec<SeriesView> {
        self.series
            .iter()
            .zip(&self.points)
            .map(|(spec, points)| {
                let start = points.partition_point(|p| p.ts < since);
                let from = start.max(points.len().saturating_sub(limit));
                SeriesView {
                    name: spec.name.clone(),
                    pane: spec.pane,
                    style: spec.style,
                    min: spec.min,
                    max: spec.max,
                    points: points.range(from..).copied().collect(),
                }
            })
            .collect()
    }

    /// The update as the `values` object of an `indicator` event: `{"ema_fast":"98012.4"}`.
    pub fn values_json(
        &self,
        update: &IndicatorUpdate,
    ) -> serde_json::Map<String, serde_json::Value> {
        update
            .values
            .iter()
            .filter_map(|&(index, value)| {
                let name = self.series.get(index)?.name.clone();
                Some((name, serde_json::Value::String(value.to_string())))
            })
            .collect()
    }
}

/// Every bot's ring. Cheap to clone; all clones share it. Each ring has its own lock, taken by
/// its bot on each update and by a reader, so bots never wait on each other.
#[derive(Debug, Clone)]
pub struct IndicatorBook {
    rings: Arc<RwLock<HashMap<BotId, Arc<Mutex<IndicatorRing>>>>>,
    capacity: usize,
}

impl Default for IndicatorBook {
    fn default() -> Self {
        Self::new(DEFAULT_POINTS)
    }
}

impl IndicatorBook {
    /// A book keeping `capacity` points per series.
    pub fn new(capacity: usize) -> Self {
        Self { rings: Arc::default(), capacity: capacity.max(1) }
    }

    /// The bot's ring for `series`: the existing one when its series are the same (a restarted
    /// actor continues the history), a fresh one otherwise.
    pub fn open(&self, bot_id: BotId, series: &[SeriesSpec]) -> Arc<Mutex<IndicatorRing>> {
        let mut rings = self.rings.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(ring) = rings.get(&bot_id)
            && ring.lock().unwrap_or_else(PoisonError::into_inner).series == series
        {
            return ring.clone();
        }
        let ring = Arc::new(Mutex::new(IndicatorRing::new(series.to_vec(), self.capacity)));
        rings.insert(bot_id, ring.clone());
        ring
    }

    /// Forgets a deleted bot's ring.
    pub fn remove(&self, bot_id: BotId) {
        self.rings.write().unwrap_or_else(PoisonError::into_inner).remove(&bot_id);
    }

    /// The bot's series and points (see [`IndicatorRing::view`]).
    pub fn view(&self, bot_id: BotId, since: u64, limit: usize) -> IndicatorsView {
        let ring = self.rings.read().unwrap_or_else(PoisonError::into_inner).get(&bot_id).cloned();
        let series = ring.map_or_else(Vec::new, |ring| {
            ring.lock().unwrap_or_else(PoisonError::into_inner).view(since, limit)
        });
        IndicatorsView { bot_id, series }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn update(ts: u64, values: &[(usize, &str)]) -> IndicatorUpdate {
        IndicatorUpdate { ts, values: values.iter().map(|&(i, v)| (i, d(v))).collect() }
    }

    #[test]
    fn rings_are_bounded_and_read_oldest_first_since_a_time() {
        let book = IndicatorBook::new(3);
        let series = [SeriesSpec::price_line("ema_fast"), SeriesSpec::price_line("ema_slow")];
        let ring = book.open(9, &series);
        for ts in 1..=5 {
            ring.lock().unwrap().push(&update(ts, &[(0, &ts.to_string())]));
        }
        ring.lock().unwrap().push(&update(6, &[(1, "7"), (5, "8")]));
        let view = book.view(9, 0, 10);
        let fast: Vec<u64> = view.series[0].points.iter().map(|p| p.ts).collect();
        assert_eq!(fast, [3, 4, 5], "the oldest points went");
        assert_eq!(view.series[1].points, [Point { ts: 6, value: d("7") }]);
        let fast: Vec<u64> = book.view(9, 4, 10).series[0].points.iter().map(|p| p.ts).collect();
        assert_eq!(fast, [4, 5]);
        let fast: Vec<u64> = book.view(9, 0, 1).series[0].points.iter().map(|p| p.ts).collect();
        assert_eq!(fast, [5], "a limit keeps the newest");
        let json = ring.lock().unwrap().values_json(&update(7, &[(0, "1.5"), (1, "2")]));
        assert_eq!(
            serde_json::Value::Object(json),
            serde_json::json!({"ema_fast": "1.5", "ema_slow": "2"})
        );

        // A restart with the same series keeps the history; other series start afresh.
        assert_eq!(book.open(9, &series).lock().unwrap().points[0].len(), 3);
        assert!(book.open(9, &series[..1]).lock().unwrap().points[0].is_empty());
        book.remove(9);
        assert!(book.view(9, 0, 10).series.is_empty());
    }
}
