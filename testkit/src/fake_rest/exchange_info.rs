//! What the fake lists in `exchangeInfo`: BTCUSDT and ETHUSDT trading and LUNAUSDT not, with
//! the filters the order book enforces. Spot uses the `NOTIONAL` filter, futures the
//! `MIN_NOTIONAL` filter with `notional`, as the real endpoints do; futures has no `BREAK`
//! status, so a halted symbol is `SETTLING` there.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::d8;

/// The spot symbols: (symbol, base, quote, status).
pub(super) const SYMBOLS: [(&str, &str, &str, &str); 3] = [
    ("BTCUSDT", "BTC", "USDT", "TRADING"),
    ("ETHUSDT", "ETH", "USDT", "TRADING"),
    ("LUNAUSDT", "LUNA", "USDT", "BREAK"),
];

/// The filters every symbol has (PRICE_FILTER, LOT_SIZE, NOTIONAL).
pub(super) struct Filters {
    pub(super) min_price: Decimal,
    pub(super) max_price: Decimal,
    pub(super) tick: Decimal,
    pub(super) min_qty: Decimal,
    pub(super) max_qty: Decimal,
    pub(super) step: Decimal,
    pub(super) min_notional: Decimal,
}

pub(super) const FILTERS: Filters = Filters {
    min_price: Decimal::from_parts(1, 0, 0, false, 2),
    max_price: Decimal::from_parts(1_000_000, 0, 0, false, 0),
    tick: Decimal::from_parts(1, 0, 0, false, 2),
    min_qty: Decimal::from_parts(1, 0, 0, false, 5),
    max_qty: Decimal::from_parts(9_000, 0, 0, false, 0),
    step: Decimal::from_parts(1, 0, 0, false, 5),
    min_notional: Decimal::from_parts(5, 0, 0, false, 0),
};

fn spot_symbol(symbol: &str, base: &str, quote: &str, status: &str) -> Value {
    json!({
        "symbol": symbol,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": true,
        "ocoAllowed": true,
        "otoAllowed": true,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": true,
        "cancelReplaceAllowed": true,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": d8(FILTERS.min_price),
             "maxPrice": d8(FILTERS.max_price), "tickSize": d8(FILTERS.tick)},
            {"filterType": "LOT_SIZE", "minQty": d8(FILTERS.min_qty),
             "maxQty": d8(FILTERS.max_qty), "stepSize": d8(FILTERS.step)},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": d8(Decimal::ZERO),
             "maxQty": "83.43584621", "stepSize": d8(Decimal::ZERO)},
            {"filterType": "NOTIONAL", "minNotional": d8(FILTERS.min_notional),
             "applyMinToMarket": true, "maxNotional": "9000000.00000000",
             "applyMaxToMarket": false, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    })
}

pub(super) fn spot_exchange_info(now: i64) -> Value {
    json!({
        "timezone": "UTC",
        "serverTime": now,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        ],
        "exchangeFilters": [],
        "symbols": SYMBOLS.iter().map(|s| spot_symbol(s.0, s.1, s.2, s.3)).collect::<Vec<_>>(),
    })
}

fn futures_symbol(symbol: &str, base: &str, quote: &str, status: &str) -> Value {
    json!({
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4_133_404_800_000_i64,
        "onboardDate": 1_569_398_400_000_i64,
        "status": status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": 2,
        "quantityPrecision": 5,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000",
             "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000",
             "stepSize": "0.00001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00001", "maxQty": "120",
             "stepSize": "0.00001"},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
             "multiplierDown": "0.9500", "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    })
}

pub(super) fn futures_exchange_info(now: i64) -> Value {
    let status = |s: &str| if s == "TRADING" { "TRADING" } else { "SETTLING" };
    json!({
        "timezone": "UTC",
        "serverTime": now,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": true, "autoAssetExchange": "-10000"}],
        "symbols": SYMBOLS
            .iter()
            .map(|s| futures_symbol(s.0, s.1, s.2, status(s.3)))
            .collect::<Vec<_>>(),
    })
}
