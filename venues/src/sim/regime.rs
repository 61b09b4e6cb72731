//! Market regimes of the simulated venue: how a symbol's price moves from one trade to the next.
//!
//! Every regime is a seeded stochastic process over the log price, one step per trade, so the
//! same seed and the same calls give the same prices. `volatility_bps` is the typical move of one
//! trade (the standard deviation of its log return, in basis points); each regime shapes it:
//!
//! | regime | process | suits |
//! |---|---|---|
//! | `walk` | Keel's original walk: up to 25 ticks either way, uniform (a fraction of a basis point on BTCUSDT); `volatility_bps` is not used | nothing: no strategy has an edge, each pays its fees |
//! | `trend` | legs of 600–2400 trades, each drifting up or down by a quarter of the volatility per trade, with noise | `ema_cross` (rides the up legs, stands aside in the down legs) |
//! | `mean_reversion` | Ornstein–Uhlenbeck around the price the segment started at (half-life about 140 trades) | `rsi` (buys the dips, sells the pops) |
//! | `volatility_clusters` | GARCH(1,1) volatility (calm stretches, then bursts), weakly pulled back to the segment's start price | `dca` (buys through a burst's sell-off, lowering its average, and takes profit on the rebound) |
//! | `gaps` | a calm walk pulled back to its anchor; about one trade in 800 jumps 1.5–4 % up or down, and the gap then fills | `grid` (a gap down fills the levels below, the gap filling sells them one level up) |
//!
//! `venues/tests/sim_regimes.rs` backtests each built-in on each regime and holds this table to
//! the figures (docs/SIM.md shows them).
//!
//! A [`RegimePlan`] is one regime for good or a schedule of `(regime, trades)` segments played in
//! a loop; each segment starts from where the last one left the price.

use std::str::FromStr;

use rand::Rng;
use rand::rngs::SmallRng;

/// How a price moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Regime {
    /// The original uniform tick walk: barely moves.
    Walk,
    /// Drifting legs up and down.
    Trend,
    /// Pulled back to an anchor.
    MeanReversion,
    /// Calm stretches and bursts (GARCH volatility).
    VolatilityClusters,
    /// Rare jumps that fill again.
    Gaps,
}

impl Regime {
    /// Every regime, in documentation order.
    pub const ALL: [Regime; 5] = [
        Regime::Walk,
        Regime::Trend,
        Regime::MeanReversion,
        Regime::VolatilityClusters,
        Regime::Gaps,
    ];

    /// Its configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Walk => "walk",
            Regime::Trend => "trend",
            Regime::MeanReversion => "mean_reversion",
            Regime::VolatilityClusters => "volatility_clusters",
            Regime::Gaps => "gaps",
        }
    }
}

impl FromStr for Regime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Regime::ALL.into_iter().find(|r| r.as_str() == s.trim()).ok_or_else(|| {
            format!(
                "unknown regime `{}`; known: {}",
                s.chars().take(40).collect::<String>(),
                Regime::ALL.map(Regime::as_str).join(", ")
            )
        })
    }
}

/// Longest schedule segment, in trades.
pub const MAX_SEGMENT_TRADES: u64 = 100_000_000;

/// Which regime a symbol is in, trade after trade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegimePlan {
    /// One regime for good.
    Fixed(Regime),
    /// Segments of `(regime, trades)`, played in order and then again from the first.
    Schedule(Vec<(Regime, u64)>),
}

impl RegimePlan {
    /// Parses a schedule from `REGIME:TRADES` items.
    ///
    /// # Errors
    /// The first item that is not one, as a sentence.
    pub fn schedule<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        if items.is_empty() {
            return Err("must list at least one REGIME:TRADES segment".to_owned());
        }
        let segments = items
            .iter()
            .map(|item| {
                let item = item.as_ref();
                let (regime, trades) =
                    item.split_once(':').ok_or_else(|| format!("`{item}` is not REGIME:TRADES"))?;
                let regime: Regime = regime.parse()?;
                let trades: u64 = trades
                    .trim()
                    .parse()
                    .ok()
                    .filter(|t| (1..=MAX_SEGMENT_TRADES).contains(t))
                    .ok_or_else(|| {
                        format!("`{item}`: trades must be from 1 to {MAX_SEGMENT_TRADES}")
                    })?;
                Ok((regime, trades))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(RegimePlan::Schedule(segments))
    }

    fn segment(&self, index: usize) -> (Regime, u64) {
        match self {
            RegimePlan::Fixed(regime) => (*regime, u64::MAX),
            RegimePlan::Schedule(segments) => segments[index % segments.len()],
        }
    }
}

/// Trend: shortest and longest leg, trades.
const TREND_LEG: (u64, u64) = (600, 2_400);
/// Trend: drift per trade, as a share of the volatility.
const TREND_DRIFT: f64 = 0.25;
/// Trend: a leg turns back towards the start price once the price is this far (log) from it.
const TREND_BOUND: f64 = 1.1; // ln 3
/// Mean reversion: pull per trade (half-life ln 2 / 0.005 ≈ 140 trades).
const REVERSION_PULL: f64 = 0.005;
/// Volatility clusters: GARCH(1,1) weights of the last squared return and the last variance.
const GARCH_ALPHA: f64 = 0.12;
const GARCH_BETA: f64 = 0.86;
/// Volatility clusters: weak pull back to the anchor per trade.
const CLUSTER_PULL: f64 = 0.0015;
/// Gaps: chance of a gap per trade, its size range (log), the pull that fills it, the calm
/// noise's share of the volatility.
const GAP_CHANCE: f64 = 1.0 / 800.0;
const GAP_SIZE: (f64, f64) = (0.015, 0.04);
const GAP_PULL: f64 = 0.004;
const GAP_CALM: f64 = 0.5;

/// One symbol's price process.
#[derive(Debug, Clone)]
pub(super) struct Process {
    plan: RegimePlan,
    segment: usize,
    left: u64,
    regime: Regime,
    /// Volatility per trade, as a fraction.
    sigma: f64,
    /// Log price now, at the start and of the anchor reversion pulls towards.
    x: f64,
    start: f64,
    anchor: f64,
    /// GARCH variance and the last return.
    variance: f64,
    last_return: f64,
    /// Trend leg: trades left and direction.
    leg_left: u64,
    leg_up: bool,
}

impl Process {
    pub(super) fn new(plan: RegimePlan, volatility_bps: f64, start_price: f64) -> Self {
        let (regime, left) = plan.segment(0);
        let sigma = volatility_bps.max(0.0) / 10_000.0;
        let x = start_price.max(f64::MIN_POSITIVE).ln();
        Self {
            plan,
            segment: 0,
            left,
            regime,
            sigma,
            x,
            start: x,
            anchor: x,
            variance: sigma * sigma,
            last_return: 0.0,
            leg_left: 0,
            leg_up: true,
        }
    }

    /// The regime the next trade is made in.
    pub(super) fn regime(&self) -> Regime {
        self.regime
    }

    /// Moves to the next trade's regime (a new segment starts from the current price).
    fn advance(&mut self) {
        if self.left == 0 {
            self.segment += 1;
            let (regime, left) = self.plan.segment(self.segment);
            self.regime = regime;
            self.left = left;
            self.anchor = self.x;
            self.leg_left = 0;
            self.variance = self.sigma * self.sigma;
        }
        self.left = self.left.saturating_sub(1);
    }

    /// The next price in ticks, from `ticks` now; `walk` is the original uniform tick step.
    pub(super) fn step(&mut self, rng: &mut SmallRng, ticks: i64, tick_size: f64) -> i64 {
        self.advance();
        if self.regime == Regime::Walk {
            let delta = rng.random_range(-super::MAX_STEP_TICKS..=super::MAX_STEP_TICKS);
            let ticks = (ticks + delta).max(super::MAX_STEP_TICKS * 4);
            self.x = (ticks as f64 * tick_size).ln();
            return ticks;
        }
        let sigma = self.sigma;
        let z = normal(rng);
        let r = match self.regime {
            Regime::Walk => unreachable!("handled above"),
            Regime::Trend => {
                if self.leg_left == 0 {
                    self.leg_left = rng.random_range(TREND_LEG.0..=TREND_LEG.1);
                    let away = self.x - self.start;
                    self.leg_up = if away > TREND_BOUND {
                        false
                    } else if away < -TREND_BOUND {
                        true
                    } else {
                        rng.random_bool(0.5)
                    };
                }
                self.leg_left -= 1;
                let drift = TREND_DRIFT * sigma;
                (if self.leg_up { drift } else { -drift }) + sigma * z
            }
            Regime::MeanReversion => -REVERSION_PULL * (self.x - self.anchor) + sigma * z,
            Regime::VolatilityClusters => {
                let omega = sigma * sigma * (1.0 - GARCH_ALPHA - GARCH_BETA);
                self.variance = omega
                    + GARCH_ALPHA * self.last_return * self.last_return
                    + GARCH_BETA * self.variance;
                let shock = self.variance.sqrt() * z;
                self.last_return = shock;
                shock - CLUSTER_PULL * (self.x - self.anchor)
            }
            Regime::Gaps => {
                let mut r = -GAP_PULL * (self.x - self.anchor) + GAP_CALM * sigma * z;
                if rng.random_bool(GAP_CHANCE) {
                    let size = rng.random_range(GAP_SIZE.0..GAP_SIZE.1);
                    r += if rng.random_bool(0.5) { size } else { -size };
                }
                r
            }
        };
        self.x += r;
        let ticks = ((self.x.exp() / tick_size).round() as i64).max(super::MAX_STEP_TICKS * 4);
        self.x = (ticks as f64 * tick_size).ln().max(self.x);
        ticks
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn names_round_trip_and_schedules_parse_or_say_why() {
        for regime in Regime::ALL {
            assert_eq!(regime.as_str().parse::<Regime>(), Ok(regime));
        }
        assert!("sideways".parse::<Regime>().unwrap_err().contains("known: walk, trend"));
        assert_eq!(
            RegimePlan::schedule(&["trend:10", "gaps:5"]),
            Ok(RegimePlan::Schedule(vec![(Regime::Trend, 10), (Regime::Gaps, 5)]))
        );
        for bad in [&["trend"][..], &["trend:0"], &["trend:x"], &["up:10"], &[]] {
            assert!(RegimePlan::schedule(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_schedule_plays_its_segments_in_a_loop() {
        let plan = RegimePlan::schedule(&["trend:3", "gaps:2"]).unwrap();
        let mut process = Process::new(plan, 2.0, 100.0);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut ticks = 1_000_000;
        let mut seen = Vec::new();
        for _ in 0..10 {
            ticks = process.step(&mut rng, ticks, 0.0001);
            seen.push(process.regime());
        }
        use Regime::{Gaps, Trend};
        assert_eq!(seen, [Trend, Trend, Trend, Gaps, Gaps, Trend, Trend, Trend, Gaps, Gaps]);
    }

    /// Standard deviation of log returns over `n` trades.
    fn realised(regime: Regime, n: usize) -> (Vec<f64>, f64) {
        let mut process = Process::new(RegimePlan::Fixed(regime), 2.0, 100.0);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut ticks = 1_000_000;
        let prices: Vec<f64> = (0..n)
            .map(|_| {
                ticks = process.step(&mut rng, ticks, 0.0001);
                ticks as f64 * 0.0001
            })
            .collect();
        let returns: Vec<f64> = prices.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        let mean = returns.iter().sum::<f64>() / returns.len() as f64;
        let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / returns.len() as f64;
        (prices, var.sqrt())
    }

    #[test]
    fn each_regime_has_its_shape() {
        // Mean reversion stays near its anchor; a trend wanders much further.
        let (mr, _) = realised(Regime::MeanReversion, 20_000);
        let (trend, _) = realised(Regime::Trend, 20_000);
        let furthest = |p: &[f64]| p.iter().map(|x| (x / 100.0).ln().abs()).fold(0.0, f64::max);
        assert!(furthest(&mr) < 0.01, "mean reversion wandered {}", furthest(&mr));
        assert!(furthest(&trend) > 0.05, "trend wandered only {}", furthest(&trend));
        // Clusters: the volatility of 100-trade windows varies much more than a steady walk's.
        let spread = |regime| {
            let (prices, _) = realised(regime, 20_000);
            let vols: Vec<f64> = prices
                .chunks(100)
                .map(|c| {
                    let r: Vec<f64> = c.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
                    (r.iter().map(|x| x * x).sum::<f64>() / r.len() as f64).sqrt()
                })
                .collect();
            let max = vols.iter().copied().fold(0.0, f64::max);
            let min = vols.iter().copied().fold(f64::MAX, f64::min);
            max / min
        };
        assert!(
            spread(Regime::VolatilityClusters) > 2.0 * spread(Regime::MeanReversion),
            "clusters {} vs steady {}",
            spread(Regime::VolatilityClusters),
            spread(Regime::MeanReversion)
        );
        // Gaps: some single trades move over 1 %; mean reversion never does.
        let jumps = |p: &[f64]| p.windows(2).filter(|w| (w[1] / w[0]).ln().abs() > 0.01).count();
        let (gaps, _) = realised(Regime::Gaps, 20_000);
        assert!(jumps(&gaps) >= 5, "{} gaps", jumps(&gaps));
        assert_eq!(jumps(&mr), 0);
        // The configured volatility is the typical move (trend and reversion: 2 bp a trade).
        let (_, sd) = realised(Regime::Trend, 20_000);
        assert!((1.8e-4..2.2e-4).contains(&sd), "trend sd {sd}");
    }
}
