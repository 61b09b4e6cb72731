//! The position and portfolio views the API shows: a bot's position at its mark price, and the
//! totals across one user's bots. Pure: the caller reads the positions (live or stored) and the
//! marks; this only shapes and sums them.

use rust_decimal::Decimal;
use serde::Serialize;

use super::{BotRecord, BotStatus};
use crate::market::Symbol;
use crate::trading::Position;
use crate::trading::margin::FuturesConfig;

/// A bot's position as `GET /bots/{id}/position` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PositionView {
    /// The bot.
    bot_id: u64,
    /// The last fill the position includes.
    fills_through: u64,
    /// Instrument.
    symbol: Symbol,
    /// Signed base quantity: positive long, negative short.
    qty: Decimal,
    /// Average entry price of the open quantity; zero when flat.
    avg_entry_price: Decimal,
    /// Profit realised by closing quantity, before fees.
    realized_pnl: Decimal,
    /// Profit of the open quantity at the mark price; null without a mark (bot not running).
    unrealized_pnl: Option<Decimal>,
    /// Fees paid, in quote.
    fees: Decimal,
    /// Quote balance.
    quote_balance: Decimal,
    /// The mark price; null without one.
    mark_price: Option<Decimal>,
    /// Absolute notional at the mark price; null without a mark.
    exposure: Option<Decimal>,
    /// A running live bot on a derivatives venue: its position as the venue reports it (entry
    /// and liquidation prices, unrealised P&L, leverage, margin type, mark). Absent on spot, in
    /// paper, while the bot is not running, and until the venue has reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    venue: Option<crate::engine::VenuePositionView>,
    /// Funding received minus paid, in quote (derivatives).
    funding: Decimal,
    /// Paper futures (a paper bot with leverage): the initial margin the position holds, in
    /// quote (notional at entry / leverage); absent on spot.
    #[serde(skip_serializing_if = "Option::is_none")]
    margin: Option<Decimal>,
    /// Paper futures: the mark price at which the position is liquidated (Binance's formula
    /// for one position, see docs/SIM.md); absent when flat, on spot, or when never.
    #[serde(skip_serializing_if = "Option::is_none")]
    liquidation_price: Option<Decimal>,
}

impl PositionView {
    /// `record`'s `position` at `mark` (none when the bot is not running), including fills up to
    /// `fills_through`.
    pub fn new(
        record: &BotRecord,
        position: &Position,
        mark: Option<Decimal>,
        fills_through: u64,
    ) -> Self {
        Self {
            bot_id: record.id,
            fills_through,
            symbol: record.symbol.clone(),
            qty: position.qty,
            avg_entry_price: position.avg_entry_price,
            realized_pnl: position.realized_pnl,
            unrealized_pnl: mark.map(|m| position.unrealized_pnl(m)),
            fees: position.fees,
            quote_balance: position.quote_balance,
            mark_price: mark,
            exposure: mark.map(|m| position.exposure(m)),
            venue: None,
            funding: position.funding,
            margin: paper_futures(record).map(|f| f.position_margin(position)),
            liquidation_price: paper_futures(record).and_then(|f| f.liquidation_price(position)),
        }
    }

    /// With the venue's view of a derivatives bot's position (`None`: not reported yet).
    #[must_use]
    pub fn with_venue(mut self, venue: Option<crate::engine::VenuePositionView>) -> Self {
        self.venue = venue;
        self
    }
}

/// The paper futures model of a paper bot with leverage.
fn paper_futures(record: &BotRecord) -> Option<FuturesConfig> {
    if record.mode != super::BotMode::Paper {
        return None;
    }
    FuturesConfig::for_bot(record)
}

/// A stopped bot's position as the store holds it. A bot that never placed an order has stored
/// no balance yet: it shows its paper starting quote.
pub fn stored_position(record: &BotRecord, stored: Position, last_order_id: u64) -> Position {
    let mut position = stored;
    if last_order_id == 0 {
        position.quote_balance = record.paper.starting_quote;
    }
    position
}

/// One bot's row of `GET /portfolio`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PortfolioItem {
    /// Its position.
    #[serde(flatten)]
    position: PositionView,
    /// Its lifecycle state.
    status: BotStatus,
    /// Its label.
    name: String,
}

/// `GET /portfolio`: totals across the caller's bots, and each bot's row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Portfolio {
    /// How many bots.
    bots: usize,
    /// Realised P&L, before fees.
    realized_pnl: Decimal,
    /// Unrealised P&L of the bots with a mark price.
    unrealized_pnl: Decimal,
    /// Fees paid.
    fees: Decimal,
    /// Realised plus unrealised, minus fees.
    net_pnl: Decimal,
    /// Absolute notional of the bots with a mark price.
    exposure: Decimal,
    /// One row per bot.
    items: Vec<PortfolioItem>,
}

/// One bot's input to [`Portfolio::new`]: its record, position, mark price (if running) and the
/// last fill its position includes.
pub type PortfolioRow = (BotRecord, Position, Option<Decimal>, u64);

impl Portfolio {
    /// Sums the rows: unrealised P&L and exposure count only the bots with a mark price.
    pub fn new(rows: impl IntoIterator<Item = PortfolioRow>) -> Self {
        let (mut realized, mut unrealized, mut fees, mut exposure) =
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        let mut items = Vec::new();
        for (record, position, mark, through) in rows {
            realized += position.realized_pnl;
            fees += position.fees;
            if let Some(mark) = mark {
                unrealized += position.unrealized_pnl(mark);
                exposure += position.exposure(mark);
            }
            let position = PositionView::new(&record, &position, mark, through);
            items.push(PortfolioItem { position, status: record.status, name: record.name });
        }
        Self {
            bots: items.len(),
            realized_pnl: realized,
            unrealized_pnl: unrealized,
            fees,
            net_pnl: realized + unrealized - fees,
            exposure,
            items,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bot::testing::record;

    fn long(qty: i64, entry: i64, realized: i64, fees: i64) -> Position {
        Position {
            qty: Decimal::from(qty),
            avg_entry_price: Decimal::from(entry),
            realized_pnl: Decimal::from(realized),
            fees: Decimal::from(fees),
            quote_balance: Decimal::from(1_000),
            funding: Decimal::ZERO,
        }
    }

    #[test]
    fn a_position_without_a_mark_has_no_unrealized_pnl_or_exposure() {
        let view = PositionView::new(&record(7, BotStatus::Stopped), &long(2, 100, 5, 1), None, 9);
        let value = serde_json::to_value(&view).unwrap();
        assert_eq!(value["bot_id"], 7);
        assert_eq!(value["fills_through"], 9);
        assert_eq!(value["symbol"], "BTCUSDT");
        assert!(value["unrealized_pnl"].is_null() && value["exposure"].is_null());
        assert!(value["mark_price"].is_null());
    }

    #[test]
    fn a_derivatives_bot_shows_the_venues_position_beside_its_own_and_others_do_not() {
        let plain = PositionView::new(&record(7, BotStatus::Running), &long(2, 100, 0, 0), None, 3);
        let value = serde_json::to_value(plain.with_venue(None)).unwrap();
        assert!(value.get("venue").is_none(), "{value}");
        let venue = crate::engine::VenuePositionView {
            symbol: "BTCUSDT".into(),
            qty: Decimal::from(-2),
            entry_price: Decimal::from(100),
            mark_price: Some(Decimal::from(104)),
            liquidation_price: Some(Decimal::from(140)),
            unrealized_pnl: Decimal::from(-8),
            leverage: Some(5),
            margin_type: Some(crate::bot::MarginType::Isolated),
            updated_ms: 12,
        };
        let view = PositionView::new(&record(7, BotStatus::Running), &long(-2, 100, 0, 0), None, 3)
            .with_venue(Some(venue));
        let value = serde_json::to_value(view).unwrap();
        assert_eq!(
            value["venue"],
            json!({"symbol": "BTCUSDT", "qty": "-2", "entry_price": "100", "mark_price": "104",
                "liquidation_price": "140", "unrealized_pnl": "-8", "leverage": 5,
                "margin_type": "isolated", "updated_ms": 12})
        );
    }

    #[test]
    fn a_position_at_a_mark_shows_its_unrealized_pnl_and_exposure() {
        let mark = Some(Decimal::from(110));
        let view = PositionView::new(&record(7, BotStatus::Running), &long(2, 100, 0, 0), mark, 3);
        let value = serde_json::to_value(&view).unwrap();
        assert_eq!(value["unrealized_pnl"], "20");
        assert_eq!(value["exposure"], "220");
        assert_eq!(value["mark_price"], "110");
    }

    #[test]
    fn a_bot_that_never_ordered_shows_its_paper_starting_quote() {
        let bot = record(1, BotStatus::Created);
        let fresh = stored_position(&bot, Position::default(), 0);
        assert_eq!(fresh.quote_balance, bot.paper.starting_quote);
        let traded = stored_position(&bot, long(1, 100, 0, 0), 4);
        assert_eq!(traded.quote_balance, Decimal::from(1_000));
    }

    #[test]
    fn the_portfolio_sums_every_bot_and_marks_only_the_running_ones() {
        let rows = vec![
            (record(1, BotStatus::Running), long(2, 100, 10, 1), Some(Decimal::from(110)), 5),
            (record(2, BotStatus::Stopped), long(1, 50, -4, 2), None, 8),
        ];
        let value = serde_json::to_value(Portfolio::new(rows)).unwrap();
        assert_eq!(value["bots"], 2);
        assert_eq!(value["realized_pnl"], "6");
        assert_eq!(value["fees"], "3");
        assert_eq!(value["unrealized_pnl"], "20");
        assert_eq!(value["exposure"], "220");
        assert_eq!(value["net_pnl"], "23");
        assert_eq!(value["items"][1]["status"], "stopped");
        assert_eq!(value["items"][1]["name"], "bot 2");
        assert_eq!(value["items"][0]["bot_id"], 1, "rows are flattened: {value}");
    }

    #[test]
    fn an_empty_portfolio_is_all_zero() {
        let value = serde_json::to_value(Portfolio::new(Vec::new())).unwrap();
        assert_eq!(value["bots"], 0);
        assert_eq!(value["net_pnl"], "0");
        assert_eq!(value["items"], json!([]));
    }
}
