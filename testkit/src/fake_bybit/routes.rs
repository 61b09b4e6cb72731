//! What the fake answers on each endpoint: public market endpoints, then signed ones.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::account::{margin_mode, position_json, set_leverage};
use super::http::{Answer, Request, authenticate, ok, refuse};
use super::orders::{cancel, create};
use super::{State, now_ms, param};

pub(super) fn answer(request: &Request, state: &State, server_time: i64) -> Answer {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/v5/market/time") => {
            state.time_requests.fetch_add(1, Ordering::Relaxed);
            let secs = server_time / 1000;
            ok(
                json!({"timeSecond": secs.to_string(), "timeNano": (server_time as i128 * 1_000_000).to_string()}),
            )
        }
        ("GET", "/v5/market/instruments-info")
            if param(&request.query, "category").as_deref() == Some("linear") =>
        {
            ok(json!({
                "category": "linear",
                "list": [{"symbol": "BTCUSDT", "contractType": "LinearPerpetual", "status": "Trading",
                    "baseCoin": "BTC", "quoteCoin": "USDT", "settleCoin": "USDT",
                    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
                    "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
                    "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": "0.001",
                        "qtyStep": "0.001", "postOnlyMaxOrderQty": "1190.000",
                        "maxMktOrderQty": "500.000", "minNotionalValue": "5"}}],
                "nextPageCursor": ""
            }))
        }
        ("GET", "/v5/market/instruments-info") => ok(json!({
            "category": param(&request.query, "category").unwrap_or_default(),
            "list": [{"symbol": "BTCUSDT", "status": "Trading", "baseCoin": "BTC", "quoteCoin": "USDT",
                "lotSizeFilter": {"basePrecision": "0.000001", "minOrderQty": "0.000048",
                    "maxOrderQty": "71.73956243", "minOrderAmt": "1", "maxOrderAmt": "2000000"},
                "priceFilter": {"tickSize": "0.01"}}],
            "nextPageCursor": ""
        })),
        (method, path) => {
            let payload = if method == "GET" { &request.query } else { &request.body };
            if let Err(refusal) = authenticate(request, payload, state, server_time) {
                return refusal;
            }
            signed(method, path, request, state)
        }
    }
}

pub(super) fn signed(method: &str, path: &str, request: &Request, state: &State) -> Answer {
    match (method, path) {
        ("POST", "/v5/order/create") => create(request, state),
        ("POST", "/v5/order/cancel") => cancel(request, state),
        ("GET", "/v5/order/realtime" | "/v5/order/history") => {
            state.queries.fetch_add(1, Ordering::Relaxed);
            let link = param(&request.query, "orderLinkId").unwrap_or_default();
            let closed_only = path == "/v5/order/history"
                || param(&request.query, "openOnly").as_deref() == Some("1");
            let book = state.book.lock().unwrap();
            let list: Vec<Value> = book
                .created
                .iter()
                .rev()
                .filter(|id| link.is_empty() || **id == link)
                .filter_map(|id| book.orders.get(id))
                .filter(|o| {
                    let open = matches!(
                        o["orderStatus"].as_str(),
                        Some("New" | "PartiallyFilled" | "Untriggered")
                    );
                    open != closed_only
                })
                .cloned()
                .collect();
            ok(
                json!({"list": list, "nextPageCursor": "", "category": param(&request.query, "category")}),
            )
        }
        ("GET", "/v5/account/wallet-balance") => ok(json!({"list": [{"accountType": "UNIFIED",
            "coin": [{"coin": "USDT", "walletBalance": "1000.5", "locked": "100.25"},
                     {"coin": "BTC", "walletBalance": "0.01", "locked": "0"}]}]})),
        ("POST", "/v5/position/set-leverage") => set_leverage(request, state),
        ("GET", "/v5/account/info") => {
            let book = state.book.lock().unwrap();
            ok(json!({"marginMode": margin_mode(&book), "unifiedMarginStatus": 5,
                "isMasterTrader": false, "spotHedgingStatus": "OFF",
                "updatedTime": now_ms().to_string(), "dcpStatus": "OFF", "timeWindow": 10,
                "smpGroup": 0}))
        }
        ("POST", "/v5/account/set-margin-mode") => {
            state.margin_switches.fetch_add(1, Ordering::Relaxed);
            let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
                return refuse(10001, "params error: body is not JSON");
            };
            let mode = body["setMarginMode"].as_str().unwrap_or_default();
            if !matches!(mode, "ISOLATED_MARGIN" | "REGULAR_MARGIN" | "PORTFOLIO_MARGIN") {
                return refuse(10001, "params error: setMarginMode");
            }
            state.book.lock().unwrap().margin_mode = Some(mode.to_owned());
            ok(json!({"reasons": []}))
        }
        ("GET", "/v5/position/list") => {
            let category = param(&request.query, "category").unwrap_or_default();
            let settle = param(&request.query, "settleCoin");
            let symbol = param(&request.query, "symbol");
            if category != "linear" || (settle.is_none() && symbol.is_none()) {
                return refuse(10001, "params error: category linear and symbol or settleCoin");
            }
            let price = *state.price.lock().unwrap();
            let book = state.book.lock().unwrap();
            let list: Vec<Value> = book
                .positions
                .iter()
                .filter(|(s, _)| symbol.as_deref().is_none_or(|want| want == s.as_str()))
                .filter(|(s, _)| settle.as_deref().is_none_or(|c| s.ends_with(c)))
                .map(|(s, (qty, entry))| position_json(&book, s, *qty, *entry, price))
                .collect();
            ok(json!({"list": list, "nextPageCursor": "", "category": "linear"}))
        }
        ("GET", "/v5/execution/list") => {
            let query = &request.query;
            let symbol = param(query, "symbol");
            let link = param(query, "orderLinkId");
            let exec_type = param(query, "execType");
            let category = param(query, "category").unwrap_or_default();
            let bound = |name: &str| param(query, name).and_then(|v| v.parse::<u64>().ok());
            let (start, end) = (bound("startTime"), bound("endTime"));
            if let (Some(start), Some(end)) = (start, end)
                && end.saturating_sub(start) > 7 * 24 * 3600 * 1000
            {
                return refuse(10001, "params error: the time range is longer than 7 days");
            }
            let book = state.book.lock().unwrap();
            // Newest first, as Bybit sorts them.
            let mut list: Vec<Value> = book
                .funding
                .iter()
                .chain(book.trades.iter())
                .filter(|e| e["category"] == category.as_str())
                .filter(|e| symbol.as_deref().is_none_or(|s| e["symbol"] == s))
                .filter(|e| link.as_deref().is_none_or(|l| e["orderLinkId"] == l))
                .filter(|e| exec_type.as_deref().is_none_or(|t| e["execType"] == t))
                .filter(|e| {
                    let t = e["execTime"].as_str().and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
                    start.is_none_or(|s| s <= t) && end.is_none_or(|e| t <= e)
                })
                .cloned()
                .collect();
            list.reverse();
            list.sort_by_key(|e| {
                std::cmp::Reverse(e["execTime"].as_str().and_then(|t| t.parse::<u64>().ok()))
            });
            ok(json!({"list": list, "nextPageCursor": "", "category": category}))
        }
        _ => refuse(10001, "unknown endpoint"),
    }
}
