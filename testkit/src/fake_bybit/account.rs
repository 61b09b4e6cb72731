//! The fake's linear account: leverage, margin mode and positions as Bybit lists them.

use std::sync::atomic::Ordering;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::http::{Answer, Request, ok, refuse};
use super::{Book, State, now_ms};

pub(super) fn margin_mode(book: &Book) -> String {
    book.margin_mode.clone().unwrap_or_else(|| "REGULAR_MARGIN".to_owned())
}

pub(super) fn set_leverage(request: &Request, state: &State) -> Answer {
    state.set_leverage_calls.fetch_add(1, Ordering::Relaxed);
    let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
        return refuse(10001, "params error: body is not JSON");
    };
    let (buy, sell) = (body["buyLeverage"].as_str(), body["sellLeverage"].as_str());
    let (Some(buy), Some(sell)) = (buy.and_then(|v| v.parse::<u32>().ok()), sell) else {
        return refuse(10001, "params error: buyLeverage and sellLeverage are strings");
    };
    if body["category"] != "linear" || sell != buy.to_string() || !(1..=100).contains(&buy) {
        return refuse(10001, "params error: leverage");
    }
    let symbol = body["symbol"].as_str().unwrap_or_default().to_owned();
    let mut book = state.book.lock().unwrap();
    if book.leverage.insert(symbol, buy) == Some(buy) {
        return refuse(110_043, "leverage not modified");
    }
    ok(json!({}))
}

pub(super) fn position_json(
    book: &Book,
    symbol: &str,
    qty: Decimal,
    entry: Decimal,
    mark: Decimal,
) -> Value {
    let side = if qty > Decimal::ZERO {
        "Buy"
    } else if qty < Decimal::ZERO {
        "Sell"
    } else {
        ""
    };
    let leverage = book.leverage.get(symbol).copied().unwrap_or(10);
    let pnl = (mark - entry) * qty;
    // A rough liquidation price: the entry moved against the position by 1 / leverage.
    let liq = if qty.is_zero() {
        String::new()
    } else {
        let step = entry / Decimal::from(leverage);
        let liq = if qty > Decimal::ZERO { entry - step } else { entry + step };
        liq.normalize().to_string()
    };
    json!({"positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": symbol,
        "side": side, "size": qty.abs().normalize().to_string(),
        "avgPrice": entry.normalize().to_string(),
        "positionValue": (qty.abs() * entry).normalize().to_string(), "tradeMode": 0,
        "autoAddMargin": 0, "positionStatus": "Normal", "leverage": leverage.to_string(),
        "markPrice": mark.normalize().to_string(), "liqPrice": liq, "bustPrice": "",
        "positionIM": "0", "positionMM": "0", "positionBalance": "0", "tpslMode": "Full",
        "takeProfit": "0", "stopLoss": "0", "trailingStop": "0",
        "unrealisedPnl": pnl.normalize().to_string(), "curRealisedPnl": "0",
        "cumRealisedPnl": "0", "adlRankIndicator": 2, "isReduceOnly": false,
        "createdTime": "1676538056258", "updatedTime": now_ms().to_string(), "seq": 1,
        "category": "linear"})
}
