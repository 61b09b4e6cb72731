//! Binance spot order lists: a live bracket's take-profit and stop-loss placed as one OCO list,
//! so the venue links them (a fill of one expires the other) and holds both while Keel is down.
//!
//! Follows <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/trading-endpoints>:
//! - `POST /api/v3/orderList/oco` (the older `POST /api/v3/order/oco` is deprecated): one leg
//!   above the market and one below. A sell bracket is `aboveType=LIMIT_MAKER` (the take-profit,
//!   `abovePrice`) over `belowType=STOP_LOSS` (the stop-loss, `belowStopPrice`); a buy bracket
//!   the other way round. `listClientOrderId`, `aboveClientOrderId` and `belowClientOrderId` are
//!   Keel's own fixed ids, so a query after a lost answer finds the list and its legs.
//! - `DELETE /api/v3/orderList` by `listClientOrderId`: cancels both legs (`-2011` when the list
//!   is not open); its `orderReports` name each leg by `origClientOrderId`.
//! - `GET /api/v3/orderList` by `origClientOrderId` (the list's client id): the list's status
//!   and its legs' ids (`-2013` when the venue never received it); each leg is then read with
//!   `GET /api/v3/order`, which knows list legs by their own client ids.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::connector::{BinanceRouter, report, route_error};
use super::rest::{RestClient, RestError, VenueOrder};
use crate::routing::{OrderListLegs, OrderReport, RouteError, RouteErrorKind, Signer};
use keel_core::market::{Symbol, VenueId};
use keel_core::trading::{OrderType, Side};

/// New OCO order list.
pub const ORDER_LIST_OCO: &str = "/api/v3/orderList/oco";
/// Cancel or query an order list.
pub const ORDER_LIST: &str = "/api/v3/orderList";

/// An order list as Binance reports it (place, cancel, query).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VenueOrderList {
    /// The venue's list id.
    pub order_list_id: i64,
    /// `OCO`.
    pub contingency_type: String,
    /// `RESPONSE`, `EXEC_STARTED`, `ALL_DONE`.
    pub list_status_type: String,
    /// `EXECUTING`, `ALL_DONE`, `REJECT`.
    pub list_order_status: String,
    /// Our list id.
    pub list_client_order_id: String,
    /// The legs' ids.
    #[serde(default)]
    pub orders: Vec<ListOrder>,
    /// The legs' states (place and cancel answers; a query lists none).
    #[serde(default)]
    pub order_reports: Vec<ListLegReport>,
}

/// One leg's ids in [`VenueOrderList::orders`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListOrder {
    /// The venue's order id.
    pub order_id: u64,
    /// The leg's client order id.
    pub client_order_id: String,
}

/// One leg's state in [`VenueOrderList::order_reports`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListLegReport {
    /// The leg as an order.
    #[serde(flatten)]
    pub order: VenueOrder,
    /// In a cancel's answer, the leg's own client id (`clientOrderId` is the cancel's).
    #[serde(default)]
    pub orig_client_order_id: Option<String>,
}

impl ListLegReport {
    /// The leg, named by its own client order id.
    fn into_order(self) -> VenueOrder {
        let mut order = self.order;
        if let Some(id) = self.orig_client_order_id {
            order.client_order_id = id;
        }
        order
    }
}

/// The parameters of `POST /api/v3/orderList/oco` for a bracket's legs.
///
/// # Errors
/// The legs are not a take-profit limit and a stop-loss stop on one side with one quantity.
pub fn oco_params(
    symbol: &Symbol,
    legs: OrderListLegs<'_>,
) -> Result<Vec<(&'static str, String)>, String> {
    let (tp, sl) = (legs.take_profit, legs.stop_loss);
    let (OrderType::Limit { price, .. }, OrderType::Stop { stop_price }) =
        (tp.order_type, sl.order_type)
    else {
        return Err("an order list needs a limit and a stop".to_owned());
    };
    if tp.side != sl.side || tp.remaining() != sl.remaining() {
        return Err("an order list's legs must share side and quantity".to_owned());
    }
    let decimal = |d: Decimal| d.normalize().to_string();
    let limit = |prefix: &'static str| -> [(&'static str, String); 3] {
        let (kind, price_key, id_key) = match prefix {
            "above" => ("aboveType", "abovePrice", "aboveClientOrderId"),
            _ => ("belowType", "belowPrice", "belowClientOrderId"),
        };
        [
            (kind, "LIMIT_MAKER".to_owned()),
            (price_key, decimal(price)),
            (id_key, tp.client_order_id.clone()),
        ]
    };
    let stop = |prefix: &'static str| -> [(&'static str, String); 3] {
        let (kind, stop_key, id_key) = match prefix {
            "above" => ("aboveType", "aboveStopPrice", "aboveClientOrderId"),
            _ => ("belowType", "belowStopPrice", "belowClientOrderId"),
        };
        [
            (kind, "STOP_LOSS".to_owned()),
            (stop_key, decimal(stop_price)),
            (id_key, sl.client_order_id.clone()),
        ]
    };
    let mut params = vec![
        ("symbol", symbol.to_string()),
        ("listClientOrderId", legs.list_client_order_id.to_owned()),
        ("side", if tp.side == Side::Buy { "BUY" } else { "SELL" }.to_owned()),
        ("quantity", decimal(tp.remaining())),
        ("newOrderRespType", "FULL".to_owned()),
    ];
    // A sell exits above the market at a profit and below it at a loss; a buy (a short's exit)
    // the other way round.
    let (above, below) = match tp.side {
        Side::Sell => (limit("above"), stop("below")),
        Side::Buy => (stop("above"), limit("below")),
    };
    params.extend(above);
    params.extend(below);
    Ok(params)
}

impl RestClient {
    /// Places a bracket as one OCO order list (`POST /api/v3/orderList/oco`).
    ///
    /// # Errors
    /// See [`RestError::is_unknown_outcome`]: an unknown outcome must be queried, never resent.
    pub async fn place_oco(
        &self,
        symbol: &Symbol,
        legs: OrderListLegs<'_>,
        signer: Signer<'_>,
    ) -> Result<VenueOrderList, RestError> {
        let params = oco_params(symbol, legs).map_err(RestError::NotSent)?;
        self.signed(reqwest::Method::POST, ORDER_LIST_OCO, params, signer).await
    }

    /// Cancels an order list by our list id (`DELETE /api/v3/orderList`).
    ///
    /// # Errors
    /// `-2011` when the list is not open.
    pub async fn cancel_order_list(
        &self,
        symbol: &Symbol,
        list_client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<VenueOrderList, RestError> {
        let params = vec![
            ("symbol", symbol.to_string()),
            ("listClientOrderId", list_client_order_id.to_owned()),
        ];
        self.signed(reqwest::Method::DELETE, ORDER_LIST, params, signer).await
    }

    /// Looks an order list up by our list id (`GET /api/v3/orderList`).
    ///
    /// # Errors
    /// `-2013` when Binance never received it.
    pub async fn query_order_list(
        &self,
        list_client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<VenueOrderList, RestError> {
        let params = vec![("origClientOrderId", list_client_order_id.to_owned())];
        self.signed(reqwest::Method::GET, ORDER_LIST, params, signer).await
    }
}

/// Only spot has order lists here (the futures dialect has no router).
fn spot_only(router: &BinanceRouter) -> Result<(), RouteError> {
    if router.rest().dialect().venue == VenueId::Binance {
        return Ok(());
    }
    Err(RouteError {
        kind: RouteErrorKind::Rejected,
        message: format!("{} has no order lists here", router.rest().dialect().venue),
    })
}

/// [`OrderRouter::place_list`](crate::routing::OrderRouter::place_list) on Binance spot.
pub(super) async fn place(
    router: &BinanceRouter,
    symbol: &Symbol,
    legs: OrderListLegs<'_>,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    spot_only(router)?;
    let list = router.rest().place_oco(symbol, legs, signer).await.map_err(route_error)?;
    legs_of(router, symbol, list, signer).await
}

/// [`OrderRouter::cancel_list`](crate::routing::OrderRouter::cancel_list) on Binance spot.
pub(super) async fn cancel(
    router: &BinanceRouter,
    symbol: &Symbol,
    list_client_order_id: &str,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    spot_only(router)?;
    let rest = router.rest();
    let list =
        rest.cancel_order_list(symbol, list_client_order_id, signer).await.map_err(route_error)?;
    legs_of(router, symbol, list, signer).await
}

/// [`OrderRouter::query_list`](crate::routing::OrderRouter::query_list) on Binance spot: the
/// list, then each of its legs (with the trades of a leg that executed).
pub(super) async fn query(
    router: &BinanceRouter,
    symbol: &Symbol,
    list_client_order_id: &str,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    spot_only(router)?;
    let rest = router.rest();
    let list = rest.query_order_list(list_client_order_id, signer).await.map_err(route_error)?;
    let mut legs = Vec::with_capacity(list.orders.len());
    for leg in &list.orders {
        let mut order =
            rest.query(symbol, &leg.client_order_id, signer).await.map_err(route_error)?;
        router.attach_trades(symbol, &mut order, signer).await.map_err(route_error)?;
        legs.push(report(order));
    }
    Ok(legs)
}

/// The legs of a place or cancel answer, with the trades of any leg that executed (a lookup
/// that fails leaves that leg's fills to be estimated, as for a single order's cancel).
async fn legs_of(
    router: &BinanceRouter,
    symbol: &Symbol,
    list: VenueOrderList,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    let mut by_id: HashMap<String, VenueOrder> = HashMap::new();
    for leg in list.order_reports {
        let order = leg.into_order();
        by_id.insert(order.client_order_id.clone(), order);
    }
    let mut legs = Vec::with_capacity(by_id.len());
    for (_, mut order) in by_id {
        if let Err(err) = router.attach_trades(symbol, &mut order, signer).await {
            tracing::warn!(client_order_id = %order.client_order_id, error = %err, "trades of a list leg not read");
        }
        legs.push(report(order));
    }
    if legs.is_empty() {
        // A documented answer always carries its legs: one without says nothing.
        return Err(route_error(RestError::Decode(format!(
            "order list {} answered without its legs",
            list.list_client_order_id
        ))));
    }
    Ok(legs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::trading::{Order, OrderOrigin, OrderStatus};

    fn leg(id: u64, side: Side, order_type: OrderType) -> Order {
        Order {
            id,
            bot_id: 42,
            client_order_id: format!("keel-42-{id:06}"),
            side,
            order_type,
            qty: "0.5".parse().unwrap(),
            filled_qty: Decimal::ZERO,
            avg_fill_price: Decimal::ZERO,
            status: OrderStatus::New,
            origin: OrderOrigin::TakeProfit,
            tag: 0,
            oco_with: None,
            venue_list: Some("keel-42-000018-oco".into()),
            reason: None,
            created_ts: 0,
            updated_ts: 0,
        }
    }

    #[test]
    fn a_sell_bracket_is_a_limit_maker_above_and_a_stop_loss_below() {
        let tp = leg(18, Side::Sell, OrderType::limit("102.00".parse().unwrap()));
        let sl = leg(19, Side::Sell, OrderType::Stop { stop_price: "99.00".parse().unwrap() });
        let legs = OrderListLegs {
            list_client_order_id: "keel-42-000018-oco",
            take_profit: &tp,
            stop_loss: &sl,
        };
        let params = oco_params(&Symbol::parse("BTCUSDT").unwrap(), legs).unwrap();
        let get = |k: &str| params.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("side"), Some("SELL"));
        assert_eq!(get("quantity"), Some("0.5"));
        assert_eq!(get("listClientOrderId"), Some("keel-42-000018-oco"));
        assert_eq!(get("aboveType"), Some("LIMIT_MAKER"));
        assert_eq!(get("abovePrice"), Some("102"));
        assert_eq!(get("aboveClientOrderId"), Some("keel-42-000018"));
        assert_eq!(get("belowType"), Some("STOP_LOSS"));
        assert_eq!(get("belowStopPrice"), Some("99"));
        assert_eq!(get("belowClientOrderId"), Some("keel-42-000019"));

        let buy_tp = leg(20, Side::Buy, OrderType::limit("98.00".parse().unwrap()));
        let buy_sl = leg(21, Side::Buy, OrderType::Stop { stop_price: "101.00".parse().unwrap() });
        let legs = OrderListLegs { take_profit: &buy_tp, stop_loss: &buy_sl, ..legs };
        let params = oco_params(&Symbol::parse("BTCUSDT").unwrap(), legs).unwrap();
        let get = |k: &str| params.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!((get("aboveType"), get("aboveStopPrice")), (Some("STOP_LOSS"), Some("101")));
        assert_eq!((get("belowType"), get("belowPrice")), (Some("LIMIT_MAKER"), Some("98")));

        let legs = OrderListLegs { take_profit: &tp, stop_loss: &buy_sl, ..legs };
        assert!(oco_params(&Symbol::parse("BTCUSDT").unwrap(), legs).is_err());
    }

    #[test]
    fn the_fixture_order_list_answers_decode_with_each_leg_under_its_own_id() {
        let fixtures = include_str!("../../../testkit/fixtures/binance/order_list_spot.jsonl");
        let mut lines = fixtures.lines().filter(|l| !l.trim().is_empty());
        let placed: VenueOrderList = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(placed.list_order_status, "EXECUTING");
        assert_eq!(placed.order_reports.len(), 2);
        let canceled: VenueOrderList = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(canceled.list_order_status, "ALL_DONE");
        let legs: Vec<VenueOrder> =
            canceled.order_reports.into_iter().map(ListLegReport::into_order).collect();
        assert!(legs.iter().all(|l| l.status == "CANCELED"));
        assert!(legs.iter().all(|l| l.client_order_id.starts_with("keel-42-")), "{legs:?}");
        let queried: VenueOrderList = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert!(queried.order_reports.is_empty());
        assert_eq!(queried.orders.len(), 2);
    }
}
