//! The fake's signed endpoints: orders, trades, position mode, margin type, leverage, balances,
//! positions, symbol configuration and income; and its exchange information.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::book::{State, StoredOrder, execute, order_event};
use super::http::{Answer, error, ok};
use super::{DEFAULT_LEVERAGE, WALLET_USDT, lock, now_ms, s};

pub(super) fn decimal(params: &HashMap<String, String>, key: &str) -> Option<Decimal> {
    params.get(key)?.parse::<Decimal>().ok().filter(|d| *d > Decimal::ZERO)
}

pub(super) fn known_symbol(params: &HashMap<String, String>) -> Result<String, Answer> {
    match params.get("symbol").map(String::as_str) {
        Some(symbol @ ("BTCUSDT" | "ETHUSDT")) => Ok(symbol.to_owned()),
        _ => Err(error(400, -1121, "Invalid symbol.")),
    }
}

pub(super) fn new_order(state: &State, params: &HashMap<String, String>) -> Answer {
    let symbol = match known_symbol(params) {
        Ok(symbol) => symbol,
        Err(answer) => return answer,
    };
    let side = match params.get("side").map(String::as_str) {
        Some(side @ ("BUY" | "SELL")) => side.to_owned(),
        _ => {
            return error(
                400,
                -1102,
                "Mandatory parameter 'side' was not sent, was empty/null, or malformed.",
            );
        }
    };
    let Some(qty) = decimal(params, "quantity") else {
        return error(
            400,
            -1102,
            "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.",
        );
    };
    let order_type = params.get("type").cloned().unwrap_or_default();
    let (tif, price) = match order_type.as_str() {
        "MARKET" => (String::from("GTC"), Decimal::ZERO),
        "LIMIT" => {
            let Some(price) = decimal(params, "price") else {
                return error(
                    400,
                    -1102,
                    "Mandatory parameter 'price' was not sent, was empty/null, or malformed.",
                );
            };
            match params.get("timeInForce").map(String::as_str) {
                Some(tif @ ("GTC" | "IOC" | "FOK" | "GTX" | "GTD")) => (tif.to_owned(), price),
                _ => {
                    return error(
                        400,
                        -1102,
                        "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
                    );
                }
            }
        }
        "STOP" | "STOP_MARKET" | "TAKE_PROFIT" | "TAKE_PROFIT_MARKET" | "TRAILING_STOP_MARKET" => {
            return error(
                400,
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            );
        }
        _ => return error(400, -1116, "Invalid orderType."),
    };
    let reduce_only = params.get("reduceOnly").map(String::as_str) == Some("true");
    let Some(client_id) = params.get("newClientOrderId").cloned() else {
        return error(
            400,
            -1102,
            "Mandatory parameter 'newClientOrderId' was not sent (the fake wants one).",
        );
    };
    let market_price = *lock(&state.price);
    let mut book = lock(&state.book);
    if book.orders.contains_key(&client_id) {
        return error(400, -4116, "ClientOrderId is duplicated.");
    }
    if reduce_only {
        let amt = book.positions.get(&symbol).map(|p| p.amt).unwrap_or_default();
        let reduces = if side == "BUY" { amt < Decimal::ZERO } else { amt > Decimal::ZERO };
        if !reduces || qty > amt.abs() {
            return error(400, -2022, "ReduceOnly Order is rejected.");
        }
    }
    if order_type == "LIMIT" && tif == "GTX" {
        let crosses = if side == "BUY" { price >= market_price } else { price <= market_price };
        if crosses {
            return error(
                400,
                -5022,
                "Due to the order could not be executed as maker, the Post Only order will be rejected. The order will not be recorded in the order history",
            );
        }
    }
    book.next_id += 1;
    let (now, order_id) = (now_ms(), book.next_id);
    book.orders.insert(
        client_id.clone(),
        StoredOrder {
            order_id,
            symbol,
            side,
            order_type: order_type.clone(),
            tif: tif.clone(),
            qty,
            price,
            executed: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            status: "NEW".into(),
            reduce_only,
            time: now,
            update_time: now,
        },
    );
    state.creates.fetch_add(1, Ordering::Relaxed);
    let placed = book.orders[&client_id].clone();
    book.outbox.push(order_event(&placed, &client_id, "NEW", None, Decimal::ZERO));
    if order_type == "MARKET" {
        execute(&mut book, &client_id, qty, market_price);
    } else if matches!(tif.as_str(), "IOC" | "FOK")
        && let Some(order) = book.orders.get_mut(&client_id)
    {
        order.status = "EXPIRED".into();
    }
    let mut json = book.orders[&client_id].json();
    json["clientOrderId"] = json!(client_id);
    json.as_object_mut().map(|o| o.remove("time"));
    let count = state.order_count_10s.fetch_add(1, Ordering::SeqCst) + 1;
    (
        200,
        json,
        vec![
            ("X-MBX-ORDER-COUNT-10S", count.to_string()),
            ("X-MBX-ORDER-COUNT-1M", count.to_string()),
        ],
    )
}

pub(super) fn signed_route(
    route: (&str, &str),
    state: &State,
    params: &HashMap<String, String>,
) -> Answer {
    let price = *lock(&state.price);
    let mut book = lock(&state.book);
    match route {
        ("GET" | "DELETE", "/fapi/v1/order") => {
            if let Err(answer) = known_symbol(params) {
                return answer;
            }
            // By our id, or (a triggered conditional order's) by the venue's `orderId`.
            let by_order_id = params.get("orderId").and_then(|id| {
                book.orders.iter().find(|(_, o)| o.order_id.to_string() == *id).map(|(c, _)| c)
            });
            let Some(id) = params.get("origClientOrderId").or(by_order_id).cloned() else {
                return error(
                    400,
                    -1102,
                    "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
                );
            };
            let id = &id;
            let Some(order) = book.orders.get_mut(id) else {
                return if route.0 == "GET" {
                    error(400, -2013, "Order does not exist.")
                } else {
                    error(400, -2011, "Unknown order sent.")
                };
            };
            if route.0 == "DELETE" {
                if !matches!(order.status.as_str(), "NEW" | "PARTIALLY_FILLED") {
                    return error(400, -2011, "Unknown order sent.");
                }
                order.status = "CANCELED".into();
                order.update_time = now_ms();
            }
            let mut json = order.json();
            json["clientOrderId"] = json!(id);
            if route.0 == "DELETE" {
                let event = order_event(&order.clone(), id, "CANCELED", None, Decimal::ZERO);
                book.outbox.push(event);
            }
            ok(json)
        }
        ("GET", "/fapi/v1/userTrades") => {
            let order_id: Option<u64> = params.get("orderId").and_then(|o| o.parse().ok());
            let symbol = params.get("symbol").cloned().unwrap_or_default();
            let trades: Vec<Value> = book
                .trades
                .iter()
                .filter(|t| t["symbol"] == json!(symbol))
                .filter(|t| order_id.is_none_or(|id| t["orderId"] == json!(id)))
                .cloned()
                .collect();
            ok(Value::Array(trades))
        }
        ("GET", "/fapi/v1/positionSide/dual") => ok(json!({"dualSidePosition": book.dual_side})),
        ("POST", "/fapi/v1/marginType") => {
            let symbol = match known_symbol(params) {
                Ok(symbol) => symbol,
                Err(answer) => return answer,
            };
            let wanted = match params.get("marginType").map(String::as_str) {
                Some(m @ ("ISOLATED" | "CROSSED")) => m.to_owned(),
                _ => return error(400, -4044, "The margin type is invalid."),
            };
            let open = book.positions.get(&symbol).is_some_and(|p| !p.amt.is_zero());
            let config = book.configs.entry(symbol).or_insert((DEFAULT_LEVERAGE, "CROSSED".into()));
            if config.1 == wanted {
                return error(400, -4046, "No need to change margin type.");
            }
            if open {
                return error(
                    400,
                    -4048,
                    "Margin type cannot be changed if there exists position.",
                );
            }
            config.1 = wanted;
            ok(json!({"code": 200, "msg": "success"}))
        }
        ("POST", "/fapi/v1/leverage") => {
            let symbol = match known_symbol(params) {
                Ok(symbol) => symbol,
                Err(answer) => return answer,
            };
            let max = if symbol == "BTCUSDT" { 125 } else { 75 };
            let leverage = params.get("leverage").and_then(|l| l.parse::<u32>().ok());
            let Some(leverage) = leverage.filter(|l| (1..=max).contains(l)) else {
                let given = params.get("leverage").cloned().unwrap_or_default();
                return error(400, -4028, &format!("Leverage {given} is not valid"));
            };
            book.configs.entry(symbol.clone()).or_insert((DEFAULT_LEVERAGE, "CROSSED".into())).0 =
                leverage;
            let notional = if leverage > 100 { "50000" } else { "1000000" };
            ok(json!({"leverage": leverage, "maxNotionalValue": notional, "symbol": symbol}))
        }
        ("GET", "/fapi/v3/balance") => {
            let margin: Decimal = book
                .positions
                .iter()
                .map(|(symbol, p)| {
                    let leverage = book.configs.get(symbol).map_or(DEFAULT_LEVERAGE, |c| c.0);
                    p.amt.abs() * p.entry / Decimal::from(leverage)
                })
                .sum();
            let funding: Decimal = book
                .income
                .iter()
                .filter_map(|i| i["income"].as_str()?.parse::<Decimal>().ok())
                .sum();
            let wallet = WALLET_USDT + funding;
            let available = (wallet - margin).max(Decimal::ZERO);
            ok(json!([{
                "accountAlias": "SgsR", "asset": "USDT", "balance": s(wallet),
                "crossWalletBalance": s(wallet), "crossUnPnl": "0.00000000",
                "availableBalance": s(available), "maxWithdrawAmount": s(available),
                "marginAvailable": true, "updateTime": now_ms()
            }]))
        }
        ("GET", "/fapi/v3/positionRisk") => {
            let wanted = params.get("symbol");
            let risks: Vec<Value> = book
                .positions
                .iter()
                .filter(|(symbol, p)| !p.amt.is_zero() && wanted.is_none_or(|w| w == *symbol))
                .map(|(symbol, p)| {
                    let (leverage, margin) =
                        book.configs.get(symbol).cloned().unwrap_or((DEFAULT_LEVERAGE, "CROSSED".into()));
                    let lev = Decimal::from(leverage);
                    let notional = p.amt * price;
                    let isolated = margin == "ISOLATED";
                    let liquidation = if isolated {
                        let sign = if p.amt > Decimal::ZERO { -Decimal::ONE } else { Decimal::ONE };
                        (p.entry * (Decimal::ONE + sign / lev)).round_dp(8)
                    } else {
                        Decimal::ZERO
                    };
                    let initial = notional.abs() / lev;
                    json!({
                        "symbol": symbol, "positionSide": "BOTH", "positionAmt": s(p.amt),
                        "entryPrice": s(p.entry), "breakEvenPrice": s(p.entry), "markPrice": s(price),
                        "unRealizedProfit": s(p.amt * (price - p.entry)),
                        "liquidationPrice": s(liquidation),
                        "isolatedMargin": if isolated { s(initial) } else { "0".into() },
                        "notional": s(notional), "marginAsset": "USDT",
                        "isolatedWallet": if isolated { s(initial) } else { "0".into() },
                        "initialMargin": s(initial), "maintMargin": s(notional.abs() * Decimal::new(4, 3)),
                        "positionInitialMargin": s(initial), "openOrderInitialMargin": "0", "adl": 1,
                        "bidNotional": "0", "askNotional": "0", "updateTime": p.update_time
                    })
                })
                .collect();
            ok(Value::Array(risks))
        }
        ("GET", "/fapi/v1/symbolConfig") => {
            let wanted = params.get("symbol");
            let configs: Vec<Value> = book
                .configs
                .iter()
                .filter(|(symbol, _)| wanted.is_none_or(|w| w == *symbol))
                .map(|(symbol, (leverage, margin))| {
                    json!({"symbol": symbol, "marginType": margin, "isAutoAddMargin": "false",
                           "leverage": leverage, "maxNotionalValue": "1000000"})
                })
                .collect();
            ok(Value::Array(configs))
        }
        ("GET", "/fapi/v1/income") => {
            let symbol = params.get("symbol");
            let kind = params.get("incomeType");
            let start: i64 = params.get("startTime").and_then(|t| t.parse().ok()).unwrap_or(0);
            let limit: usize =
                params.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100).min(1000);
            let mut income: Vec<Value> = book
                .income
                .iter()
                .filter(|i| symbol.is_none_or(|s| i["symbol"] == json!(s)))
                .filter(|i| kind.is_none_or(|k| i["incomeType"] == json!(k)))
                .filter(|i| i["time"].as_i64().unwrap_or(0) >= start)
                .cloned()
                .collect();
            income.sort_by_key(|i| i["time"].as_i64().unwrap_or(0));
            income.truncate(limit);
            ok(Value::Array(income))
        }
        ("GET" | "DELETE", "/fapi/v1/algoOrder") => {
            super::algo::get_or_cancel(route.0, &mut book, params)
        }
        _ => error(404, -1000, "Unknown endpoint."),
    }
}

pub(super) fn exchange_info(now: i64) -> Value {
    let symbol = |symbol: &str, base: &str, tick: &str, step: &str| {
        json!({
            "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL", "status": "TRADING",
            "baseAsset": base, "quoteAsset": "USDT", "marginAsset": "USDT",
            "pricePrecision": 2, "quantityPrecision": 3,
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000", "stepSize": step},
                {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "120", "stepSize": step},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MIN_NOTIONAL", "notional": "5"},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": 4}
            ]
        })
    };
    json!({
        "timezone": "UTC", "serverTime": now, "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}
        ],
        "symbols": [symbol("BTCUSDT", "BTC", "0.10", "0.001"), symbol("ETHUSDT", "ETH", "0.01", "0.001")]
    })
}
