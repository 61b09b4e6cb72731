//! Whether an exchange account holds what a live bot's first order needs: a spot bot starts
//! flat, so its first order is a buy paid in the quote asset (Keel's spot bots never short). A
//! bot whose account cannot pay for it is refused at start, naming the asset, the amount needed
//! and the amount free, rather than started to have its first order rejected by the venue.
//!
//! What the first order takes, by strategy: `dca` buys `quote_amount` of quote; `ema_cross` and
//! `rsi` buy `qty` at the market; `grid` buys `qty_per_level` at a level at or below the market.
//! The latter three are valued at the last price Keel knows (none known: not checked). A
//! WebAssembly strategy's orders are its own: not checked.

use rust_decimal::Decimal;

use super::BotRecord;

/// Quote assets Binance and Bybit list spot pairs in, longest first so `FDUSD` wins over `USD`
/// spellings that end the same.
const QUOTE_ASSETS: [&str; 12] =
    ["FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "TRY", "BRL", "JPY", "BTC", "ETH", "BNB"];

/// What a first order takes from the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The asset it is paid in.
    pub asset: String,
    /// How much of it.
    pub amount: Decimal,
}

/// An account that cannot pay for the first order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the account has {free} {asset} free; the bot's first order needs {needed} {asset}")]
pub struct Shortfall {
    /// The asset.
    pub asset: String,
    /// What the first order needs.
    pub needed: Decimal,
    /// What the account has free.
    pub free: Decimal,
}

/// The quote asset of a spot symbol (`BTCUSDT` → `USDT`), when it ends with a known one.
pub fn quote_asset(symbol: &str) -> Option<&'static str> {
    QUOTE_ASSETS.into_iter().find(|q| symbol.len() > q.len() && symbol.ends_with(q))
}

/// What `record`'s first order needs, valued at `price` where the strategy sizes in base; `None`
/// when it cannot be said (a WebAssembly strategy, no price, an unknown quote asset).
pub fn first_order_need(record: &BotRecord, price: Option<Decimal>) -> Option<Need> {
    let asset = quote_asset(record.symbol.as_str())?.to_owned();
    let params = &record.strategy.params;
    let decimal = |name: &str| -> Option<Decimal> { params.get(name)?.as_str()?.parse().ok() };
    let amount = match record.strategy.kind.as_str() {
        "dca" => decimal("quote_amount")?,
        "ema_cross" | "rsi" => decimal("qty")?.checked_mul(price?)?,
        "grid" => {
            let below = match decimal("upper") {
                Some(upper) => price?.min(upper),
                None => price?,
            };
            decimal("qty_per_level")?.checked_mul(below)?
        }
        _ => return None,
    };
    Some(Need { asset, amount: amount.normalize() })
}

/// Whether `free` of the asset pays for `need`.
///
/// # Errors
/// The shortfall: asset, needed, free.
pub fn check_funds(need: &Need, free: Decimal) -> Result<(), Shortfall> {
    if free >= need.amount {
        return Ok(());
    }
    Err(Shortfall { asset: need.asset.clone(), needed: need.amount, free: free.normalize() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::StrategySpec;

    fn record(kind: &str, params: serde_json::Value) -> BotRecord {
        let mut record: BotRecord = serde_json::from_value(serde_json::json!({
            "id": 1, "user_id": 1, "name": "b", "venue": "binance", "symbol": "BTCUSDT",
            "mode": "live", "exchange_account_id": 1,
            "strategy": {"kind": "dca", "params": {}},
            "risk": {}, "bracket": null, "paper": {"starting_quote": "10000", "fee_bps": "10"},
            "filters": {"tick_size": "0.01", "step_size": "0.00001", "min_qty": "0.00001",
                "max_qty": "9000", "min_notional": "5"},
            "status": "stopped", "status_reason": null, "created_ts": 0, "updated_ts": 0
        }))
        .unwrap();
        record.strategy = StrategySpec { kind: kind.into(), module_id: None, params };
        record
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn each_strategy_says_what_its_first_buy_takes() {
        let dca = record("dca", serde_json::json!({"quote_amount": "50"}));
        assert_eq!(
            first_order_need(&dca, None),
            Some(Need { asset: "USDT".into(), amount: d("50") })
        );
        let ema = record("ema_cross", serde_json::json!({"qty": "0.01"}));
        assert_eq!(first_order_need(&ema, None), None, "no price, no check");
        assert_eq!(first_order_need(&ema, Some(d("100"))).unwrap().amount, d("1"));
        let grid = record("grid", serde_json::json!({"upper": "90", "qty_per_level": "2"}));
        assert_eq!(first_order_need(&grid, Some(d("100"))).unwrap().amount, d("180"));
        assert_eq!(first_order_need(&record("wasm", serde_json::json!({})), Some(d("1"))), None);
    }

    #[test]
    fn a_shortfall_names_asset_needed_and_free() {
        let need = Need { asset: "USDT".into(), amount: d("50") };
        assert!(check_funds(&need, d("50")).is_ok());
        let short = check_funds(&need, d("12.50")).unwrap_err();
        assert_eq!(
            short.to_string(),
            "the account has 12.5 USDT free; the bot's first order needs 50 USDT"
        );
        assert_eq!(quote_asset("ETHBTC"), Some("BTC"));
        assert_eq!(quote_asset("BTCFDUSD"), Some("FDUSD"));
        assert_eq!(quote_asset("USDT"), None);
    }
}
