//! Trading domain types shared by strategies, risk, the order manager and execution.
//!
//! Everything here is plain data: no actors, no I/O. The same types flow through a live bot, a
//! paper bot and a backtest, which is what lets the three make identical decisions.
//!
//! Quantities are always positive; direction is carried by [`Side`]. A [`Position`]'s quantity is
//! signed (negative is short, which only futures venues allow).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub mod margin;
pub mod paper;
pub mod risk;

pub use crate::market::Side;

impl Side {
    /// The other side.
    pub fn opposite(self) -> Self {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// +1 for a buy, -1 for a sell.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }
}

/// How an order executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderType {
    /// At the best available price, now.
    Market,
    /// At `price` or better; rests until the market trades through it, as long as its time in
    /// force allows.
    Limit {
        /// Limit price.
        price: Decimal,
        /// How long it may rest (good till canceled unless said).
        #[serde(default, skip_serializing_if = "TimeInForce::is_gtc")]
        time_in_force: TimeInForce,
    },
    /// A market order that is armed until the market trades at or through `stop_price`
    /// (emulated by Keel on every venue; used for bracket stop-losses, which a venue with native
    /// brackets holds itself as a leg of its OCO list).
    Stop {
        /// Trigger price.
        stop_price: Decimal,
    },
    /// A limit order at `price` that is armed until the market trades at or through
    /// `stop_price` (a buy: at or above; a sell: at or below). Native on Binance
    /// (`STOP_LOSS_LIMIT`), emulated by the paper venue.
    StopLimit {
        /// Trigger price.
        stop_price: Decimal,
        /// Limit price once triggered.
        price: Decimal,
    },
    /// A market order triggered once the price moves `trailing_bps` basis points against the
    /// best price since it was placed (a sell: down from the highest; a buy: up from the
    /// lowest). Native on Binance (`STOP_LOSS` with `trailingDelta`), emulated by the paper
    /// venue.
    TrailingStop {
        /// The retracement that triggers it, in basis points (10 to 2000, Binance's range).
        trailing_bps: u32,
    },
}

/// How long a limit order may rest.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till canceled.
    #[default]
    Gtc,
    /// Immediate or cancel: fill what the book offers now, cancel the rest.
    Ioc,
    /// Fill or kill: fill all of it now, or none.
    Fok,
    /// Post only: rest as a maker, or be refused if it would trade at once (Binance
    /// `LIMIT_MAKER`).
    PostOnly,
}

impl TimeInForce {
    /// Whether this is the default, good till canceled.
    pub fn is_gtc(&self) -> bool {
        *self == TimeInForce::Gtc
    }
}

/// Trailing deltas Binance accepts (its default `TRAILING_DELTA` filter), in basis points; Keel
/// holds every venue to it, so paper and live agree.
pub const TRAILING_BPS: std::ops::RangeInclusive<u32> = 10..=2000;

impl OrderType {
    /// A good-till-canceled limit at `price`.
    pub fn limit(price: Decimal) -> Self {
        OrderType::Limit { price, time_in_force: TimeInForce::Gtc }
    }

    /// The limit price, if any (a stop-limit's too).
    pub fn limit_price(&self) -> Option<Decimal> {
        match self {
            OrderType::Limit { price, .. } | OrderType::StopLimit { price, .. } => Some(*price),
            _ => None,
        }
    }
}

/// Who asked for an order. Brackets and position closes are placed by the order manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderOrigin {
    /// The bot's strategy.
    Strategy,
    /// The owner, over the API.
    Manual,
    /// A bracket's take-profit leg.
    TakeProfit,
    /// A bracket's stop-loss leg.
    StopLoss,
    /// `close-position` or the kill switch flattening.
    Close,
}

/// What a strategy (or the owner) asks for. The order manager turns it into an [`Order`] after
/// risk checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderRequest {
    /// Buy or sell.
    pub side: Side,
    /// Base quantity, positive.
    pub qty: Decimal,
    /// Market, limit or stop.
    #[serde(flatten)]
    pub order_type: OrderType,
    /// A label the strategy chooses (for example a grid level); it comes back on fills.
    #[serde(default)]
    pub tag: u32,
}

impl OrderRequest {
    /// A market order.
    pub fn market(side: Side, qty: Decimal) -> Self {
        Self { side, qty, order_type: OrderType::Market, tag: 0 }
    }

    /// A limit order.
    pub fn limit(side: Side, qty: Decimal, price: Decimal) -> Self {
        Self { side, qty, order_type: OrderType::limit(price), tag: 0 }
    }

    /// The same request with a strategy tag.
    pub fn tagged(mut self, tag: u32) -> Self {
        self.tag = tag;
        self
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created locally, not yet acknowledged by the venue.
    New,
    /// Resting at the venue (or armed, for an emulated stop).
    Accepted,
    /// Some quantity filled, the rest still working.
    PartiallyFilled,
    /// Completely filled. Final.
    Filled,
    /// Canceled, possibly after partial fills. Final.
    Canceled,
    /// Refused by risk checks or the venue. Final.
    Rejected,
    /// The venue did not answer (timeout, 5xx): the outcome is not known until reconciled.
    Unknown,
    /// An unknown order whose real outcome was found and applied. Final.
    Reconciled,
}

impl OrderStatus {
    /// Whether nothing more can happen to the order.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Filled
                | OrderStatus::Canceled
                | OrderStatus::Rejected
                | OrderStatus::Reconciled
        )
    }

    /// Whether the order may still fill (it counts against open-order limits).
    pub fn is_open(self) -> bool {
        !self.is_final()
    }
}

/// One order of one bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    /// Per-bot sequence number, from 1.
    pub id: u64,
    /// The bot.
    pub bot_id: u64,
    /// Deterministic id sent to the venue, so a retry is idempotent.
    pub client_order_id: String,
    /// Buy or sell.
    pub side: Side,
    /// Market, limit or stop.
    #[serde(flatten)]
    pub order_type: OrderType,
    /// Ordered base quantity.
    pub qty: Decimal,
    /// Filled base quantity so far.
    pub filled_qty: Decimal,
    /// Volume-weighted fill price, zero before the first fill.
    pub avg_fill_price: Decimal,
    /// State.
    pub status: OrderStatus,
    /// Who asked for it.
    pub origin: OrderOrigin,
    /// The strategy's label.
    pub tag: u32,
    /// For a bracket leg: the other leg's order id (one cancels the other).
    pub oco_with: Option<u64>,
    /// For a bracket leg placed as the venue's own order list (a native OCO): the list's client
    /// id there. The venue links the legs (a fill of one expires the other) and holds both while
    /// Keel is down; `None` for every other order, including emulated bracket legs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue_list: Option<String>,
    /// Why it was rejected or canceled, when it was.
    pub reason: Option<String>,
    /// Created, ms since the epoch.
    pub created_ts: u64,
    /// Last changed, ms since the epoch.
    pub updated_ts: u64,
}

impl Order {
    /// Quantity still to fill.
    pub fn remaining(&self) -> Decimal {
        self.qty - self.filled_qty
    }
}

/// Whether a fill added liquidity or took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Liquidity {
    /// Resting order filled by someone else.
    Maker,
    /// Order that crossed the spread.
    Taker,
}

/// One execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fill {
    /// Per-bot sequence number, from 1.
    pub id: u64,
    /// The bot.
    pub bot_id: u64,
    /// The order it belongs to.
    pub order_id: u64,
    /// Buy or sell.
    pub side: Side,
    /// Execution price.
    pub price: Decimal,
    /// Base quantity.
    pub qty: Decimal,
    /// Fee, valued in the quote asset (see `commission` for what the venue actually took).
    pub fee: Decimal,
    /// Maker or taker.
    pub liquidity: Liquidity,
    /// The order's strategy label.
    pub tag: u32,
    /// When, ms since the epoch (market time, so replays are deterministic).
    pub ts: u64,
    /// The commission as the venue charged it, in its own asset. Absent on paper and sim fills
    /// (their fee is charged in the quote asset and `fee` says it all) and on live fills whose
    /// commission the venue did not report (`fee` is then an estimate at the bot's fee rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commission: Option<Commission>,
}

/// Which of the instrument's assets a commission was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeeAsset {
    /// The quote asset (USDT on BTCUSDT): the quote balance pays it.
    Quote,
    /// The base asset (BTC on BTCUSDT, Binance's rule on a buy): the base received is smaller.
    Base,
    /// Another asset (BNB when the account pays fees in BNB): neither base nor quote changes.
    Other,
}

/// A commission in the asset the venue took it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Commission {
    /// The asset (`BTC`, `USDT`, `BNB`).
    pub asset: String,
    /// The amount, in that asset.
    pub amount: Decimal,
    /// Whether it came out of the base, the quote, or another asset.
    pub charged_to: FeeAsset,
    /// Whether the fill's `fee` (its value in quote) is an estimate: a commission in a third
    /// asset (BNB) is valued at the bot's configured fee rate, since Keel has no price for it.
    #[serde(default)]
    pub quote_value_estimated: bool,
}

impl Commission {
    /// Classifies `asset` against `symbol` (`BTCUSDT`): the quote when the symbol ends with it,
    /// the base when it starts with it, another asset otherwise.
    pub fn classify(symbol: &str, asset: &str) -> FeeAsset {
        if !asset.is_empty() && symbol.ends_with(asset) && symbol.len() > asset.len() {
            FeeAsset::Quote
        } else if !asset.is_empty() && symbol.starts_with(asset) && symbol.len() > asset.len() {
            FeeAsset::Base
        } else {
            FeeAsset::Other
        }
    }
}

/// A bot's holdings and profit, in one instrument.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Position {
    /// Signed base quantity: positive long, negative short.
    pub qty: Decimal,
    /// Average entry price of the open quantity; zero when flat.
    pub avg_entry_price: Decimal,
    /// Profit realised by closing quantity, before fees.
    pub realized_pnl: Decimal,
    /// Fees paid, in quote.
    pub fees: Decimal,
    /// Quote balance (paper: starting quote, minus buys, plus sells, minus fees).
    pub quote_balance: Decimal,
    /// Funding received minus paid, in quote.
    #[serde(default)]
    pub funding: Decimal,
}

impl Position {
    /// Applies one fill: weighted entry when adding, realised P&L when reducing, and a flip
    /// through zero opens the remainder at the fill price.
    pub fn apply(&mut self, side: Side, qty: Decimal, price: Decimal, fee: Decimal) {
        let signed = side.sign() * qty;
        let same_direction =
            self.qty.is_zero() || self.qty.is_sign_positive() == signed.is_sign_positive();
        if same_direction {
            let new_qty = self.qty + signed;
            self.avg_entry_price =
                (self.avg_entry_price * self.qty.abs() + price * qty) / new_qty.abs();
            self.qty = new_qty;
        } else {
            let closing = qty.min(self.qty.abs());
            let direction =
                if self.qty.is_sign_positive() { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
            self.realized_pnl += (price - self.avg_entry_price) * closing * direction;
            self.qty += signed;
            if self.qty.is_zero() {
                self.avg_entry_price = Decimal::ZERO;
            } else if qty > closing {
                // Flipped through zero: what is left was opened at this price.
                self.avg_entry_price = price;
            }
        }
        self.quote_balance -= signed * price + fee;
        self.fees += fee;
    }

    /// Applies one fill with its commission charged where the venue took it: from the quote
    /// balance (paper fills, and live fills charged in quote), from the base received (a
    /// commission in the base asset: the account holds that much less), or from neither (a third
    /// asset such as BNB). `fees` counts the commission's quote value in every case.
    pub fn apply_fill(&mut self, fill: &Fill) {
        match &fill.commission {
            None | Some(Commission { charged_to: FeeAsset::Quote, .. }) => {
                self.apply(fill.side, fill.qty, fill.price, fill.fee);
            }
            Some(Commission { charged_to: FeeAsset::Base, amount, .. }) => {
                self.apply(fill.side, fill.qty, fill.price, Decimal::ZERO);
                self.qty -= *amount;
                if self.qty.is_zero() {
                    self.avg_entry_price = Decimal::ZERO;
                }
                self.fees += fill.fee;
            }
            Some(Commission { charged_to: FeeAsset::Other, .. }) => {
                self.apply(fill.side, fill.qty, fill.price, Decimal::ZERO);
                self.fees += fill.fee;
            }
        }
    }

    /// Profit of the open quantity marked at `mark`.
    pub fn unrealized_pnl(&self, mark: Decimal) -> Decimal {
        (mark - self.avg_entry_price) * self.qty
    }

    /// Absolute notional of the open quantity at `mark`.
    pub fn exposure(&self, mark: Decimal) -> Decimal {
        (self.qty * mark).abs()
    }
}

/// A venue's rules for one instrument, checked before any order leaves Keel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstrumentFilters {
    /// Smallest price increment.
    pub tick_size: Decimal,
    /// Smallest quantity increment.
    pub step_size: Decimal,
    /// Smallest quantity.
    pub min_qty: Decimal,
    /// Largest quantity.
    pub max_qty: Decimal,
    /// Smallest price × quantity.
    pub min_notional: Decimal,
}

impl InstrumentFilters {
    /// Whether `price` is a whole number of ticks.
    pub fn price_on_tick(&self, price: Decimal) -> bool {
        self.tick_size.is_zero() || (price % self.tick_size).is_zero()
    }

    /// Whether `qty` is a whole number of steps.
    pub fn qty_on_step(&self, qty: Decimal) -> bool {
        self.step_size.is_zero() || (qty % self.step_size).is_zero()
    }

    /// `qty` rounded down to a whole number of steps.
    pub fn floor_qty(&self, qty: Decimal) -> Decimal {
        if self.step_size.is_zero() {
            return qty;
        }
        ((qty / self.step_size).floor() * self.step_size).normalize()
    }

    /// `price` rounded to the nearest tick.
    pub fn round_price(&self, price: Decimal) -> Decimal {
        if self.tick_size.is_zero() {
            return price;
        }
        (price / self.tick_size).round() * self.tick_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn position_tracks_entry_realised_pnl_flips_and_balance() {
        let mut p = Position { quote_balance: d("1000"), ..Position::default() };
        p.apply(Side::Buy, d("1"), d("100"), d("0.1"));
        p.apply(Side::Buy, d("1"), d("110"), d("0.1"));
        assert_eq!((p.qty, p.avg_entry_price), (d("2"), d("105")));
        p.apply(Side::Sell, d("1"), d("120"), d("0.1"));
        assert_eq!((p.qty, p.avg_entry_price, p.realized_pnl), (d("1"), d("105"), d("15")));
        // Sell 3 with 1 held: close 1 at +5, open a short of 2 at 110.
        p.apply(Side::Sell, d("3"), d("110"), d("0.1"));
        assert_eq!((p.qty, p.avg_entry_price, p.realized_pnl), (d("-2"), d("110"), d("20")));
        p.apply(Side::Buy, d("2"), d("100"), d("0"));
        assert_eq!((p.qty, p.avg_entry_price, p.realized_pnl), (d("0"), d("0"), d("40")));
        assert_eq!(p.fees, d("0.4"));
        // Flat: the balance is the start plus realised P&L minus fees.
        assert_eq!(p.quote_balance, d("1000") + d("40") - d("0.4"));
    }

    #[test]
    fn filters_check_and_round_to_tick_and_step() {
        let f = InstrumentFilters {
            tick_size: d("0.01"),
            step_size: d("0.001"),
            min_qty: d("0.001"),
            max_qty: d("1000"),
            min_notional: d("5"),
        };
        assert!(f.price_on_tick(d("100.01")) && !f.price_on_tick(d("100.015")));
        assert!(f.qty_on_step(d("0.002")) && !f.qty_on_step(d("0.0025")));
        assert_eq!(f.floor_qty(d("0.0029")), d("0.002"));
        assert_eq!(f.round_price(d("100.016")), d("100.02"));
    }
}
