//! Binance's instrument rules: the exchange-info filters (`PRICE_FILTER`, `LOT_SIZE`, the
//! minimum order value) of spot and USD-M futures, read into Keel's [`InstrumentFilters`].

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::Deserialize;

use keel_core::market::Symbol;
use keel_core::trading::InstrumentFilters;

/// `GET /api/v3/exchangeInfo` (or the futures' `/fapi/v1/exchangeInfo`), as far as Keel reads it.
#[derive(Deserialize)]
pub(super) struct ExchangeInfo {
    symbols: Vec<SymbolInfo>,
}

#[derive(Deserialize)]
struct SymbolInfo {
    symbol: String,
    status: String,
    #[serde(default)]
    filters: Vec<serde_json::Value>,
}

impl ExchangeInfo {
    /// The rules of every symbol trading now, with the market's minimum order value.
    pub(super) fn tradable(
        self,
        min_notional: fn(&[serde_json::Value]) -> Option<Decimal>,
    ) -> HashMap<Symbol, InstrumentFilters> {
        self.symbols
            .into_iter()
            .filter(|s| s.status == "TRADING")
            .filter_map(|s| {
                let filters = filters_of(&s.filters, min_notional)?;
                Some((Symbol::parse(&s.symbol)?, filters))
            })
            .collect()
    }
}

/// The decimal string field `key` of an exchange-info filter.
pub fn filter_field(filter: &serde_json::Value, key: &str) -> Option<Decimal> {
    filter.get(key)?.as_str()?.parse::<Decimal>().ok()
}

/// The exchange-info filter of type `filter_type`.
pub fn find_filter<'a>(
    filters: &'a [serde_json::Value],
    filter_type: &str,
) -> Option<&'a serde_json::Value> {
    filters.iter().find(|f| f.get("filterType").and_then(|v| v.as_str()) == Some(filter_type))
}

/// Spot's minimum order value: `NOTIONAL.minNotional`, or the older `MIN_NOTIONAL.minNotional`.
pub fn spot_min_notional(filters: &[serde_json::Value]) -> Option<Decimal> {
    find_filter(filters, "NOTIONAL").and_then(|f| filter_field(f, "minNotional")).or_else(|| {
        find_filter(filters, "MIN_NOTIONAL").and_then(|f| filter_field(f, "minNotional"))
    })
}

/// Reads PRICE_FILTER, LOT_SIZE and the minimum order value (by `min_notional`) into filters;
/// `None` without the first two.
fn filters_of(
    filters: &[serde_json::Value],
    min_notional: fn(&[serde_json::Value]) -> Option<Decimal>,
) -> Option<InstrumentFilters> {
    let field = filter_field;
    let find = |t: &str| find_filter(filters, t);
    let price = find("PRICE_FILTER")?;
    let lot = find("LOT_SIZE")?;
    let min_notional = min_notional(filters).unwrap_or_default();
    Some(InstrumentFilters {
        tick_size: field(price, "tickSize")?,
        step_size: field(lot, "stepSize")?,
        min_qty: field(lot, "minQty")?,
        max_qty: field(lot, "maxQty")?,
        min_notional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_info_filters_are_read_from_binances_shapes() {
        let spot: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"filterType":"PRICE_FILTER","minPrice":"0.01","maxPrice":"1000000.00","tickSize":"0.01"},
                {"filterType":"LOT_SIZE","minQty":"0.00001","maxQty":"9000.00000000","stepSize":"0.00001"},
                {"filterType":"NOTIONAL","minNotional":"5.00000000","applyMinToMarket":true}]"#,
        )
        .unwrap();
        let f = filters_of(&spot, spot_min_notional).unwrap();
        assert_eq!(f.tick_size.to_string(), "0.01");
        assert_eq!(f.step_size.to_string(), "0.00001");
        assert_eq!(f.min_notional.to_string(), "5.00000000");
        let futures: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"filterType":"PRICE_FILTER","tickSize":"0.10"},{"filterType":"LOT_SIZE","minQty":"0.001","maxQty":"1000","stepSize":"0.001"},
                {"filterType":"MIN_NOTIONAL","notional":"100"}]"#,
        )
        .unwrap();
        let futures_min_notional = crate::binance_futures::DIALECT.min_notional;
        assert_eq!(
            filters_of(&futures, futures_min_notional).unwrap().min_notional,
            Decimal::ONE_HUNDRED
        );
        assert!(filters_of(&[], spot_min_notional).is_none());
    }
}
