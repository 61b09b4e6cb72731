//! Native brackets on Binance USD-M futures: a live bracket's take-profit and stop-loss placed as
//! two conditional orders of the Algo Order API, so they trigger at the venue while Keel is down.
//!
//! Follows <https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/New-Algo-Order>
//! and its siblings (Cancel, Query) and "Event: Algo Order Update":
//! - `POST /fapi/v1/algoOrder`, `algoType=CONDITIONAL`: the take-profit as `TAKE_PROFIT_MARKET`
//!   triggered at the leg's limit price, the stop-loss as `STOP_MARKET` at its stop price, both
//!   `workingType=CONTRACT_PRICE` (the last price, what Keel's own stops watch), each under its
//!   leg's client order id as `clientAlgoId`. They are sent `reduceOnly=true` with the leg's
//!   `quantity`, not `closePosition=true`: Close-All would close the whole position on the
//!   symbol, including what other bots on the account hold there (one-way mode keeps one
//!   position per symbol) and more than the bracket protects; reduce-only with a quantity exits
//!   exactly the bracket's quantity and can never open or flip a position (the documentation
//!   forbids sending both flags together). A trigger already crossed is `-2021` ("Order would
//!   immediately trigger."), refused like any other refusal.
//! - Binance does not link the two orders (no one-cancels-the-other): when one leg fills, Keel
//!   cancels the other (the engine's `oco_with`); a leg that triggers after the position is gone
//!   is refused at the venue as reduce-only. The list has no id at the venue: its legs are named
//!   by Keel's list id (`keel-{bot}-{n:06}-oco`: the take-profit is order `n`, the stop-loss
//!   `n + 1`, as [`keel_core::engine::list_client_order_id`] makes them).
//! - `DELETE /fapi/v1/algoOrder` by `clientAlgoId` (`-2011` when it is not open any more).
//! - `GET /fapi/v1/algoOrder` by `clientAlgoId` (`-2013` when the venue never received it):
//!   `algoStatus` `NEW`/`TRIGGERING` is open; `TRIGGERED`/`FINISHED` name the market order it
//!   became (`actualOrderId`), read with `GET /fapi/v1/order?orderId=` and its trades (with
//!   their commission), and reported under the leg's own client id; `CANCELED`, `REJECTED`,
//!   `EXPIRED` are final.
//!
//! The legs are sent by [`place_both`] (shared with Bybit): the stop-loss only once the
//! take-profit is known to be there, a lost answer settled by looking the leg up by its
//! `clientAlgoId` (never sent again), a refused stop-loss taking the take-profit back so the
//! whole list is refused (Keel then emulates the bracket). What still cannot be settled is
//! reported unknown, and the query reports a leg the venue does not know, while its partner is
//! there, as `EXPIRED` (it was never received: nothing of it executed).

use rust_decimal::Decimal;
use serde::Deserialize;

use super::router::{FuturesOrder, FuturesRouter, is_exit};
use crate::binance::connector::route_error;
use crate::binance::rest::RestError;
use crate::bracket_legs::{LegRole, LegVenue, place_both};
use crate::routing::{OrderListLegs, OrderReport, RouteError, RouteErrorKind, RouteFuture, Signer};
use keel_core::engine::list_leg_ids;
use keel_core::market::Symbol;
use keel_core::trading::{Order, OrderType, Side};

/// New, cancel and query of a conditional order.
pub const ALGO_ORDER: &str = "/fapi/v1/algoOrder";

/// A conditional order as Binance reports it (place, query).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlgoOrder {
    /// The venue's id of it.
    #[serde(default)]
    pub algo_id: u64,
    /// Our client id (the leg's client order id).
    pub client_algo_id: String,
    /// `NEW`, `TRIGGERING`, `TRIGGERED`, `FINISHED`, `CANCELED`, `REJECTED`, `EXPIRED`.
    #[serde(default)]
    pub algo_status: String,
    /// The order's quantity (zero for Close-All).
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub quantity: Option<Decimal>,
    /// The market order it became once triggered (`""` before; a number or a string).
    #[serde(default)]
    pub actual_order_id: serde_json::Value,
    /// What that order executed, when the venue says (a finished order's answer does).
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub actual_qty: Option<Decimal>,
    /// At what average price.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub actual_price: Option<Decimal>,
}

impl AlgoOrder {
    /// The triggered market order's id, once there is one.
    pub fn actual_order(&self) -> Option<u64> {
        order_id_of(&self.actual_order_id)
    }
}

/// An order id Binance sends as a number or a string (`""` or `0` for none).
pub fn order_id_of(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|id| *id > 0)
}

/// What an `algoStatus` (with what the triggered order executed of `qty`) means as an order
/// status, when the triggered order itself is not read: open until it executes, final after.
pub fn status_word(algo_status: &str, executed: Decimal, qty: Decimal) -> Option<&'static str> {
    Some(match algo_status {
        "NEW" | "TRIGGERING" => "NEW",
        "TRIGGERED" if executed.is_zero() => "NEW",
        "TRIGGERED" => "PARTIALLY_FILLED",
        "FINISHED" if !qty.is_zero() && executed >= qty => "FILLED",
        "FINISHED" | "EXPIRED" => "EXPIRED",
        "CANCELED" => "CANCELED",
        "REJECTED" => "REJECTED",
        _ => return None,
    })
}

/// New Algo Order's parameters for one leg of a bracket.
///
/// # Errors
/// The leg is neither a take-profit limit nor a stop-loss stop, or not an exit.
pub fn algo_params(symbol: &Symbol, leg: &Order) -> Result<Vec<(&'static str, String)>, String> {
    let (kind, trigger) = match leg.order_type {
        OrderType::Limit { price, .. } => ("TAKE_PROFIT_MARKET", price),
        OrderType::Stop { stop_price } => ("STOP_MARKET", stop_price),
        _ => return Err("a futures bracket leg is a take-profit limit or a stop".to_owned()),
    };
    if !is_exit(leg.origin) {
        return Err("only a bracket's exits go to the venue as conditional orders".to_owned());
    }
    let decimal = |d: Decimal| d.normalize().to_string();
    Ok(vec![
        ("algoType", "CONDITIONAL".to_owned()),
        ("symbol", symbol.to_string()),
        ("side", if leg.side == Side::Buy { "BUY" } else { "SELL" }.to_owned()),
        ("type", kind.to_owned()),
        ("quantity", decimal(leg.remaining())),
        ("triggerPrice", decimal(trigger)),
        ("workingType", "CONTRACT_PRICE".to_owned()),
        ("reduceOnly", "true".to_owned()),
        ("clientAlgoId", leg.client_order_id.clone()),
    ])
}

impl FuturesRouter {
    async fn new_algo(
        &self,
        symbol: &Symbol,
        leg: &Order,
        signer: Signer<'_>,
    ) -> Result<AlgoOrder, RestError> {
        let params = algo_params(symbol, leg).map_err(RestError::NotSent)?;
        self.rest().signed(reqwest::Method::POST, ALGO_ORDER, params, signer).await
    }

    async fn algo(
        &self,
        method: reqwest::Method,
        client_algo_id: &str,
        signer: Signer<'_>,
    ) -> Result<serde_json::Value, RestError> {
        let params = vec![("clientAlgoId", client_algo_id.to_owned())];
        self.rest().signed(method, ALGO_ORDER, params, signer).await
    }

    /// One leg as the venue has it, under its own client id; `None` when the venue never
    /// received it.
    ///
    /// # Errors
    /// The lookup (or that of the order it became, with its trades) failed.
    pub(super) async fn algo_leg(
        &self,
        symbol: &Symbol,
        client_algo_id: &str,
        signer: Signer<'_>,
    ) -> Result<Option<OrderReport>, RouteError> {
        let found = match self.algo(reqwest::Method::GET, client_algo_id, signer).await {
            Ok(found) => found,
            Err(err) if err.is_no_such_order() => return Ok(None),
            Err(err) => return Err(route_error(err)),
        };
        let algo: AlgoOrder = serde_json::from_value(found)
            .map_err(|e| route_error(RestError::Decode(e.to_string())))?;
        if let (Some(order_id), "TRIGGERED" | "FINISHED") =
            (algo.actual_order(), algo.algo_status.as_str())
        {
            let params = vec![("symbol", symbol.to_string()), ("orderId", order_id.to_string())];
            let order: FuturesOrder = self
                .rest()
                .signed(reqwest::Method::GET, "/fapi/v1/order", params, signer)
                .await
                .map_err(route_error)?;
            let mut report =
                self.with_trades(symbol, order, signer).await.map_err(|(_, e)| route_error(e))?;
            report.client_order_id = client_algo_id.to_owned();
            return Ok(Some(report));
        }
        let executed = algo.actual_qty.unwrap_or_default();
        let Some(status) =
            status_word(&algo.algo_status, executed, algo.quantity.unwrap_or_default())
        else {
            return Err(route_error(RestError::Decode(format!(
                "conditional order {client_algo_id}: unknown algoStatus {}",
                algo.algo_status
            ))));
        };
        let price = algo.actual_price.unwrap_or_default();
        Ok(Some(leg_report(client_algo_id.to_owned(), status, executed, price)))
    }
}

/// [`list_leg_ids`], or the refusal of a list id that is not a bracket's.
fn legs(list_client_order_id: &str) -> Result<(String, String), RouteError> {
    list_leg_ids(list_client_order_id).ok_or_else(|| RouteError {
        kind: RouteErrorKind::Rejected,
        message: format!("{list_client_order_id} is not a Keel bracket's list id"),
    })
}

/// A leg's report without fills (its trades are read where they are needed).
fn leg_report(
    client_order_id: String,
    status: &str,
    executed: Decimal,
    price: Decimal,
) -> OrderReport {
    OrderReport {
        client_order_id,
        status: status.to_owned(),
        executed_qty: executed,
        cum_quote: executed * price,
        fills: Vec::new(),
    }
}

/// One bracket's legs as conditional orders on `symbol`, for [`place_both`].
struct AlgoLegs<'a> {
    router: &'a FuturesRouter,
    symbol: &'a Symbol,
    signer: Signer<'a>,
}

impl LegVenue for AlgoLegs<'_> {
    fn create<'a>(&'a self, leg: &'a Order, _: LegRole) -> RouteFuture<'a, ()> {
        Box::pin(async move {
            self.router.new_algo(self.symbol, leg, self.signer).await.map_err(route_error)?;
            Ok(())
        })
    }

    fn look_up<'a>(&'a self, client_order_id: &'a str) -> RouteFuture<'a, ()> {
        Box::pin(async move {
            // `-2013` when it never arrived: `NoSuchOrder`.
            self.router
                .algo(reqwest::Method::GET, client_order_id, self.signer)
                .await
                .map_err(route_error)?;
            Ok(())
        })
    }

    fn withdraw<'a>(&'a self, leg: &'a Order) -> RouteFuture<'a, ()> {
        Box::pin(async move {
            // Any failure, "not open" included (it may have triggered), leaves it unknown.
            let id = &leg.client_order_id;
            self.router.algo(reqwest::Method::DELETE, id, self.signer).await.map_err(|err| {
                tracing::warn!(client_order_id = %id, error = %err, "take-profit of a refused bracket not canceled");
                route_error(err)
            })?;
            Ok(())
        })
    }

    fn accept_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.router.rest().recv_window_ms())
    }
}

/// [`OrderRouter::place_list`](crate::routing::OrderRouter::place_list) on USD-M futures:
/// both legs through [`place_both`], each reported as the conditional order it rests as.
pub(super) async fn place(
    router: &FuturesRouter,
    symbol: &Symbol,
    legs: OrderListLegs<'_>,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    let (tp, sl) = (legs.take_profit, legs.stop_loss);
    if tp.side != sl.side || tp.remaining() != sl.remaining() {
        return Err(RouteError {
            kind: RouteErrorKind::Rejected,
            message: "a bracket's legs must share side and quantity".to_owned(),
        });
    }
    place_both(&AlgoLegs { router, symbol, signer }, tp, sl).await?;
    let resting =
        |leg: &Order| leg_report(leg.client_order_id.clone(), "NEW", Decimal::ZERO, Decimal::ZERO);
    Ok(vec![resting(tp), resting(sl)])
}

/// [`OrderRouter::query_list`](crate::routing::OrderRouter::query_list) on USD-M futures.
pub(super) async fn query(
    router: &FuturesRouter,
    symbol: &Symbol,
    list_client_order_id: &str,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    let (tp, sl) = legs(list_client_order_id)?;
    let take_profit = router.algo_leg(symbol, &tp, signer).await?;
    let stop_loss = router.algo_leg(symbol, &sl, signer).await?;
    let never_sent = |id: String| leg_report(id, "EXPIRED", Decimal::ZERO, Decimal::ZERO);
    match (take_profit, stop_loss) {
        (None, None) => Err(route_error(RestError::Api {
            status: 400,
            code: -2013,
            msg: format!("neither leg of {list_client_order_id} is known to the venue"),
        })),
        (take_profit, stop_loss) => Ok(vec![
            take_profit.unwrap_or_else(|| never_sent(tp)),
            stop_loss.unwrap_or_else(|| never_sent(sl)),
        ]),
    }
}

/// [`OrderRouter::cancel_list`](crate::routing::OrderRouter::cancel_list) on USD-M futures:
/// cancels each leg still open, then reports both.
pub(super) async fn cancel(
    router: &FuturesRouter,
    symbol: &Symbol,
    list_client_order_id: &str,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    let (tp, sl) = legs(list_client_order_id)?;
    let mut canceled = false;
    for leg in [&tp, &sl] {
        match router.algo(reqwest::Method::DELETE, leg, signer).await {
            Ok(_) => canceled = true,
            // Triggered, finished or canceled already, or never received: nothing to cancel.
            Err(err)
                if err.is_no_such_order() || matches!(err, RestError::Api { code: -2011, .. }) => {}
            Err(err) => return Err(route_error(err)),
        }
    }
    if !canceled {
        return Err(route_error(RestError::Api {
            status: 400,
            code: -2011,
            msg: format!("no leg of {list_client_order_id} is open"),
        }));
    }
    query(router, symbol, list_client_order_id, signer).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::engine::{client_order_id, list_client_order_id};
    use keel_core::trading::{OrderOrigin, OrderStatus};

    fn leg(id: u64, side: Side, order_type: OrderType, origin: OrderOrigin) -> Order {
        Order {
            id,
            bot_id: 42,
            client_order_id: client_order_id(42, id),
            side,
            order_type,
            qty: "0.5".parse().unwrap(),
            filled_qty: Decimal::ZERO,
            avg_fill_price: Decimal::ZERO,
            status: OrderStatus::New,
            origin,
            tag: 0,
            oco_with: None,
            venue_list: Some(list_client_order_id(42, 18)),
            reason: None,
            created_ts: 0,
            updated_ts: 0,
        }
    }

    #[test]
    fn legs_go_as_reduce_only_conditional_market_orders_for_a_long_and_a_short() {
        let btc = Symbol::parse("BTCUSDT").unwrap();
        let get = |params: &[(&str, String)], k: &str| {
            params.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone())
        };
        for (side, tp_price, sl_price) in [(Side::Sell, "110", "95"), (Side::Buy, "90", "105")] {
            let tp =
                leg(18, side, OrderType::limit(tp_price.parse().unwrap()), OrderOrigin::TakeProfit);
            let stop = OrderType::Stop { stop_price: sl_price.parse().unwrap() };
            let sl = leg(19, side, stop, OrderOrigin::StopLoss);
            let tp = algo_params(&btc, &tp).unwrap();
            let sl = algo_params(&btc, &sl).unwrap();
            let word = if side == Side::Buy { "BUY" } else { "SELL" };
            for (params, kind, trigger, id) in [
                (&tp, "TAKE_PROFIT_MARKET", tp_price, "keel-42-000018"),
                (&sl, "STOP_MARKET", sl_price, "keel-42-000019"),
            ] {
                assert_eq!(get(params, "algoType").as_deref(), Some("CONDITIONAL"));
                assert_eq!(get(params, "type").as_deref(), Some(kind));
                assert_eq!(get(params, "side").as_deref(), Some(word));
                assert_eq!(get(params, "triggerPrice").as_deref(), Some(trigger));
                assert_eq!(get(params, "quantity").as_deref(), Some("0.5"));
                assert_eq!(get(params, "reduceOnly").as_deref(), Some("true"));
                assert_eq!(get(params, "clientAlgoId").as_deref(), Some(id));
                assert_eq!(get(params, "closePosition"), None);
            }
        }
        let entry =
            leg(1, Side::Buy, OrderType::Stop { stop_price: Decimal::ONE }, OrderOrigin::Strategy);
        assert!(algo_params(&btc, &entry).is_err());
    }

    #[test]
    fn algo_statuses_read_as_order_statuses() {
        let (zero, half, one) = (Decimal::ZERO, Decimal::new(5, 1), Decimal::ONE);
        let cases = [
            ("NEW", zero, "NEW"),
            ("TRIGGERING", zero, "NEW"),
            ("TRIGGERED", zero, "NEW"),
            ("TRIGGERED", half, "PARTIALLY_FILLED"),
            ("FINISHED", one, "FILLED"),
            ("FINISHED", half, "EXPIRED"),
            ("CANCELED", zero, "CANCELED"),
            ("REJECTED", zero, "REJECTED"),
            ("EXPIRED", zero, "EXPIRED"),
        ];
        for (status, executed, word) in cases {
            assert_eq!(status_word(status, executed, one), Some(word), "{status} {executed}");
        }
        assert_eq!(status_word("SOMETHING_NEW", zero, one), None);
    }

    #[test]
    fn the_documented_answers_decode() {
        let fixtures = include_str!("../../../testkit/fixtures/binance_futures/algo.jsonl");
        let mut lines = fixtures.lines().filter(|l| !l.trim().is_empty());
        let placed: AlgoOrder = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!((placed.algo_status.as_str(), placed.actual_order()), ("NEW", None));
        let finished: AlgoOrder = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(finished.algo_status, "FINISHED");
        assert_eq!(finished.actual_order(), Some(974_828_356_187));
        assert_eq!(finished.actual_qty, Some(Decimal::new(2, 3)));
    }
}
