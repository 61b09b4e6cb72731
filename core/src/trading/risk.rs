//! Pre-trade risk: every order is checked against the venue's filters and the bot's limits
//! before it leaves Keel, and every refusal says which rule, with the numbers.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::margin::{self, FuturesConfig};
use super::{InstrumentFilters, Order, OrderRequest, OrderType, Position, Side, TRAILING_BPS};
use crate::validation::FieldError;

/// Largest amount any limit may be set to: beyond it a limit means nothing.
pub(crate) const MAX_LIMIT: u64 = 1_000_000_000_000;
/// Most open orders a limit may allow.
const MAX_OPEN_ORDERS: u32 = 1000;

/// A bot's own limits. Each is optional; an absent limit does not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskLimits {
    /// Largest price × quantity of one order, in quote.
    #[serde(default)]
    pub max_order_notional: Option<Decimal>,
    /// Largest absolute position, in base, counting open orders on the same side.
    #[serde(default)]
    pub max_position: Option<Decimal>,
    /// Most orders open at once.
    #[serde(default)]
    pub max_open_orders: Option<u32>,
    /// Loss in one UTC day (realised + unrealised − fees, in quote) that pauses the bot.
    #[serde(default)]
    pub max_daily_loss: Option<Decimal>,
    /// Highest leverage the bot may be given (derivatives venues): a bot asking for more is
    /// refused at admission.
    #[serde(default)]
    pub max_leverage: Option<u32>,
    /// Largest notional the bot may hold, in quote: its position at the mark price plus the
    /// open orders that add to it, plus the order being checked (`MAX_NOTIONAL`).
    #[serde(default)]
    pub max_notional: Option<Decimal>,
}

impl RiskLimits {
    /// Field errors for limits that are not positive or are absurd.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let amounts = [
            ("risk.max_order_notional", self.max_order_notional),
            ("risk.max_position", self.max_position),
            ("risk.max_daily_loss", self.max_daily_loss),
            ("risk.max_notional", self.max_notional),
        ];
        for (field, value) in amounts {
            if let Some(v) = value
                && (v <= Decimal::ZERO || v > Decimal::from(MAX_LIMIT))
            {
                errors.push(FieldError::new(
                    field,
                    format!("must be above 0 and at most {MAX_LIMIT}"),
                ));
            }
        }
        if let Some(n) = self.max_open_orders
            && !(1..=MAX_OPEN_ORDERS).contains(&n)
        {
            errors.push(FieldError::new(
                "risk.max_open_orders",
                format!("must be 1 to {MAX_OPEN_ORDERS}"),
            ));
        }
        if let Some(n) = self.max_leverage
            && !(1..=crate::bot::MAX_LEVERAGE).contains(&n)
        {
            errors.push(FieldError::new(
                "risk.max_leverage",
                format!("must be 1 to {}", crate::bot::MAX_LEVERAGE),
            ));
        }
        errors
    }
}

/// What a check needs to know about the bot and the market.
#[derive(Debug, Clone, Copy)]
pub struct RiskContext<'a> {
    /// The venue's rules.
    pub filters: &'a InstrumentFilters,
    /// The bot's limits.
    pub limits: &'a RiskLimits,
    /// Current position and balance.
    pub position: &'a Position,
    /// The bot's open orders.
    pub open_orders: &'a [Order],
    /// Mark price, to value market orders.
    pub mark_price: Option<Decimal>,
    /// Whether the position may go below zero (futures).
    pub allow_short: bool,
    /// Whether sells must be covered by the position and buys by the quote balance (spot).
    pub base_balance_check: bool,
    /// How much more exposure the user's other limits allow, when the caller tracks it.
    pub user_exposure_headroom: Option<Decimal>,
    /// The owner's `max_notional` over all their bots and what the other bots hold, when the
    /// owner set one (`MAX_USER_NOTIONAL`).
    pub user_notional: Option<UserNotional>,
    /// The bot's exposure now (position at mark plus open orders that add to it), in quote,
    /// for `max_notional`.
    pub exposure: Decimal,
    /// Paper futures: the order needs margin (notional / leverage) rather than the full
    /// notional in quote.
    pub futures: Option<&'a FuturesConfig>,
}

/// An owner's notional limit over all of their bots, as one bot sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserNotional {
    /// The owner's `max_notional` (quote).
    pub limit: Decimal,
    /// The notional the owner's other bots hold (each published by its bot, the measure of
    /// `max_notional`).
    pub others: Decimal,
}

/// Why an order was refused: a stable code and the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RiskRejection {
    /// Stable machine-readable rule name (`MAX_ORDER_NOTIONAL`).
    pub code: &'static str,
    /// For a person, with the values involved.
    pub reason: String,
}

fn reject(code: &'static str, reason: String) -> Result<(), RiskRejection> {
    Err(RiskRejection { code, reason })
}

/// Checks one order. The first rule it breaks is reported.
///
/// # Errors
/// The rule broken, with a reason naming the numbers.
pub fn check_order(req: &OrderRequest, ctx: &RiskContext<'_>) -> Result<(), RiskRejection> {
    let f = ctx.filters;
    let qty = req.qty;
    if qty <= Decimal::ZERO {
        return reject("QTY_NOT_POSITIVE", format!("quantity {qty} must be above 0"));
    }
    if !f.qty_on_step(qty) {
        return reject(
            "QTY_OFF_STEP",
            format!("quantity {qty} is not a multiple of the step size {}", f.step_size),
        );
    }
    if qty < f.min_qty {
        return reject(
            "BELOW_MIN_QTY",
            format!("quantity {qty} is below the minimum {}", f.min_qty),
        );
    }
    if f.max_qty > Decimal::ZERO && qty > f.max_qty {
        return reject(
            "ABOVE_MAX_QTY",
            format!("quantity {qty} is above the maximum {}", f.max_qty),
        );
    }
    let on_tick = |price: Decimal| {
        if price <= Decimal::ZERO {
            return reject("PRICE_NOT_POSITIVE", format!("price {price} must be above 0"));
        }
        if !f.price_on_tick(price) {
            return reject(
                "PRICE_OFF_TICK",
                format!("price {price} is not a multiple of the tick size {}", f.tick_size),
            );
        }
        Ok(())
    };
    let price = match req.order_type {
        OrderType::Limit { price, .. } | OrderType::Stop { stop_price: price } => {
            on_tick(price)?;
            price
        }
        OrderType::StopLimit { stop_price, price } => {
            on_tick(stop_price)?;
            on_tick(price)?;
            price
        }
        OrderType::TrailingStop { trailing_bps } if !TRAILING_BPS.contains(&trailing_bps) => {
            return reject(
                "TRAILING_DELTA",
                format!(
                    "trailing_bps {trailing_bps} is outside {}..={}",
                    TRAILING_BPS.start(),
                    TRAILING_BPS.end()
                ),
            );
        }
        OrderType::Market | OrderType::TrailingStop { .. } => match ctx.mark_price {
            Some(mark) => mark,
            None => {
                return reject("NO_PRICE", "no market price yet to value a market order".into());
            }
        },
    };
    let Some(notional) = price.checked_mul(qty) else {
        return reject("ABOVE_MAX_QTY", format!("order value {price} × {qty} is out of range"));
    };
    if notional < f.min_notional {
        return reject(
            "BELOW_MIN_NOTIONAL",
            format!("order notional {notional} is below the minimum {}", f.min_notional),
        );
    }
    let limits = ctx.limits;
    if let Some(max) = limits.max_order_notional
        && notional > max
    {
        return reject(
            "MAX_ORDER_NOTIONAL",
            format!("order notional {notional} exceeds max_order_notional {max}"),
        );
    }
    if let Some(max) = limits.max_open_orders {
        let open = ctx.open_orders.iter().filter(|o| o.status.is_open()).count();
        if open >= max as usize {
            return reject(
                "MAX_OPEN_ORDERS",
                format!("{open} orders are open; max_open_orders is {max}"),
            );
        }
    }
    let open_same_side: Decimal = ctx
        .open_orders
        .iter()
        .filter(|o| o.status.is_open() && o.side == req.side)
        .map(Order::remaining)
        .sum();
    let signed = req.side.sign() * qty;
    if let Some(max) = limits.max_position {
        let after = ctx.position.qty + signed + req.side.sign() * open_same_side;
        if after.abs() > max && after.abs() > ctx.position.qty.abs() {
            return reject(
                "MAX_POSITION",
                format!(
                    "position would reach {} with open orders; max_position is {max}",
                    after.abs()
                ),
            );
        }
    }
    if ctx.base_balance_check {
        match req.side {
            Side::Sell => {
                let free = ctx.position.qty - open_same_side;
                if qty > free {
                    let code = if ctx.allow_short { "INSUFFICIENT_BALANCE" } else { "NO_SHORTING" };
                    return reject(
                        code,
                        format!(
                            "selling {qty} needs that much held; {free} is free after open sells"
                        ),
                    );
                }
            }
            Side::Buy => {
                let reserved: Decimal = ctx
                    .open_orders
                    .iter()
                    .filter(|o| o.status.is_open() && o.side == Side::Buy)
                    .map(|o| {
                        o.remaining()
                            * o.order_type.limit_price().or(ctx.mark_price).unwrap_or_default()
                    })
                    .sum();
                let free = ctx.position.quote_balance - reserved;
                if notional > free {
                    return reject(
                        "INSUFFICIENT_BALANCE",
                        format!("buying needs {notional} quote; {free} is free after open buys"),
                    );
                }
            }
        }
    } else if !ctx.allow_short && req.side == Side::Sell && qty > ctx.position.qty - open_same_side
    {
        return reject("NO_SHORTING", format!("selling {qty} would open a short position"));
    }
    let increases = ctx.position.qty.is_zero()
        || ctx.position.qty.is_sign_positive() == (req.side == Side::Buy);
    if let Some(max) = limits.max_notional
        && increases
        && ctx.exposure + notional > max
    {
        return reject(
            "MAX_NOTIONAL",
            format!(
                "notional would reach {} with the position and open orders; max_notional is {max}",
                ctx.exposure + notional
            ),
        );
    }
    if let Some(user) = ctx.user_notional
        && increases
        && user.others + ctx.exposure + notional > user.limit
    {
        return reject(
            "MAX_USER_NOTIONAL",
            format!(
                "notional across your bots would reach {} ({} in this bot with the order, {} in \
                 the others); your max_notional is {}",
                user.others + ctx.exposure + notional,
                ctx.exposure + notional,
                user.others,
                user.limit
            ),
        );
    }
    if let Some(futures) = ctx.futures {
        check_margin(req, notional, price, futures, ctx)?;
    }
    if let Some(headroom) = ctx.user_exposure_headroom
        && increases
        && notional > headroom
    {
        return reject(
            "USER_EXPOSURE",
            format!("order notional {notional} exceeds the user's remaining exposure {headroom}"),
        );
    }
    Ok(())
}

/// Paper futures: what the order adds to the position needs `notional / leverage` of margin,
/// from the wallet balance less the unrealised loss and the margin the position and the open
/// orders that add to it already hold.
fn check_margin(
    req: &OrderRequest,
    notional: Decimal,
    price: Decimal,
    futures: &FuturesConfig,
    ctx: &RiskContext<'_>,
) -> Result<(), RiskRejection> {
    let position = ctx.position;
    let reduces =
        !position.qty.is_zero() && position.qty.is_sign_positive() != (req.side == Side::Buy);
    let opening = if reduces { (req.qty - position.qty.abs()).max(Decimal::ZERO) } else { req.qty };
    if opening.is_zero() {
        return Ok(());
    }
    let needed = futures.initial_margin(opening * price);
    let adding = |o: &&Order| {
        o.status.is_open()
            && (position.qty.is_zero() || position.qty.is_sign_positive() == (o.side == Side::Buy))
    };
    let orders: Decimal = ctx
        .open_orders
        .iter()
        .filter(adding)
        .map(|o| o.remaining() * o.order_type.limit_price().or(ctx.mark_price).unwrap_or_default())
        .sum();
    let loss =
        ctx.mark_price.map_or(Decimal::ZERO, |m| position.unrealized_pnl(m).min(Decimal::ZERO));
    let available = margin::wallet_balance(position) + loss
        - futures.position_margin(position)
        - futures.initial_margin(orders);
    if needed > available {
        return reject(
            "INSUFFICIENT_MARGIN",
            format!(
                "the order needs {} margin ({notional} at {}x); {} is available",
                needed.round_dp(8).normalize(),
                futures.leverage,
                available.round_dp(8).normalize()
            ),
        );
    }
    Ok(())
}

/// Tracks one UTC day's P&L for `max_daily_loss`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyLoss {
    /// Days since the epoch of the day being tracked.
    day: u64,
    /// Realised P&L minus fees at the start of that day.
    start_realized: Decimal,
    /// Unrealised P&L at the start of that day.
    start_unrealized: Decimal,
    /// Today's P&L at the last observation.
    today: Decimal,
}

impl DailyLoss {
    /// A tracker that starts on the first observation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Today's P&L (realised + unrealised − fees, since the UTC day began), rolling over at
    /// midnight.
    pub fn observe(&mut self, now_ms: u64, position: &Position, mark: Option<Decimal>) -> Decimal {
        let day = now_ms / 86_400_000;
        let realized = position.realized_pnl - position.fees;
        let unrealized = mark.map_or(Decimal::ZERO, |m| position.unrealized_pnl(m));
        if day != self.day {
            self.day = day;
            self.start_realized = realized;
            self.start_unrealized = unrealized;
        }
        self.today = (realized - self.start_realized) + (unrealized - self.start_unrealized);
        self.today
    }

    /// Whether the last observation is a loss of at least the limit.
    pub fn breached(&self, limits: &RiskLimits) -> bool {
        limits.max_daily_loss.is_some_and(|max| -self.today >= max)
    }
}

#[cfg(test)]
mod tests;
