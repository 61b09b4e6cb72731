//! Orders on Bybit v5: create, look up, cancel, their executions, and the JSON body of a create.

use rust_decimal::Decimal;
use serde::Deserialize;

use super::{List, RawExecution, RestClient, RestError, settle_coin};
use crate::bybit::Category;
use crate::routing::{OrderFill, Signer};
use crate::urlencode;
use keel_core::market::Symbol;
use keel_core::trading::{Order, OrderOrigin, OrderType, Side, TimeInForce};

/// An order as Bybit lists it (`/v5/order/realtime`, `/v5/order/history`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VenueOrder {
    /// Our client order id.
    pub order_link_id: String,
    /// `New`, `PartiallyFilled`, `Filled`, `Cancelled`, `PartiallyFilledCanceled`, `Rejected`,
    /// `Untriggered`, `Triggered`, `Deactivated`.
    pub order_status: String,
    /// Filled base quantity so far.
    #[serde(with = "rust_decimal::serde::str")]
    pub cum_exec_qty: Decimal,
    /// Filled quote amount so far.
    #[serde(with = "rust_decimal::serde::str")]
    pub cum_exec_value: Decimal,
}

impl VenueOrder {
    /// The status in the words the seam uses (Binance's): `NEW`, `PARTIALLY_FILLED`, `FILLED`,
    /// `CANCELED`, `REJECTED`, `EXPIRED`.
    pub fn status_word(&self) -> &'static str {
        match self.order_status.as_str() {
            "PartiallyFilled" => "PARTIALLY_FILLED",
            "Filled" => "FILLED",
            "Cancelled" | "PartiallyFilledCanceled" => "CANCELED",
            "Rejected" => "REJECTED",
            "Deactivated" => "EXPIRED",
            // New, Untriggered (a conditional order waiting), Triggered (just sent to the book).
            _ => "NEW",
        }
    }
}

impl RestClient {
    /// Places `order` (`POST /v5/order/create`, `orderLinkId` = our client order id), then reads
    /// it back once: a create answer carries only the ids, and a market order has usually filled
    /// by then. If the read fails the order is reported `NEW` (it was accepted), for the caller to
    /// query later. A stop is sent as the market order it becomes (Keel emulates stops). A market
    /// buy on spot is sized in the base coin (`marketUnit=baseCoin`; Bybit's default for it is
    /// the quote coin).
    ///
    /// # Errors
    /// See [`RestError::is_unknown_outcome`].
    pub async fn place(
        &self,
        symbol: &Symbol,
        order: &Order,
        signer: Signer<'_>,
    ) -> Result<VenueOrder, RestError> {
        let body = create_body(self.category, symbol, order)?;
        let _: serde_json::Value =
            self.signed(reqwest::Method::POST, "/v5/order/create", body, signer).await?;
        match self.query(symbol, &order.client_order_id, signer).await {
            Ok(found) => Ok(found),
            Err(err) => {
                tracing::debug!(venue = self.venue(), error = %err, "placed; state not read back");
                Ok(VenueOrder {
                    order_link_id: order.client_order_id.clone(),
                    order_status: "New".into(),
                    cum_exec_qty: Decimal::ZERO,
                    cum_exec_value: Decimal::ZERO,
                })
            }
        }
    }

    /// Looks an order up by our client id: open orders first, then the recent closed ones
    /// (`openOnly=1`), then the order history (Bybit keeps only the last 500 closed orders in
    /// the first two, and none after one of its restarts).
    ///
    /// # Errors
    /// `Api { code: 170213 }`-like "not found" as [`RestError::is_not_open`] when Bybit has no
    /// such order anywhere.
    pub async fn query(
        &self,
        symbol: &Symbol,
        client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<VenueOrder, RestError> {
        let base = format!(
            "category={}&symbol={}&orderLinkId={}",
            self.category.name,
            symbol.as_str(),
            urlencode(client_order_id)
        );
        for (path, extra) in [
            ("/v5/order/realtime", ""),
            ("/v5/order/realtime", "&openOnly=1"),
            ("/v5/order/history", ""),
        ] {
            let query = format!("{base}{extra}");
            let page: List<VenueOrder> =
                self.signed(reqwest::Method::GET, path, query, signer).await?;
            if let Some(found) = page.list.into_iter().find(|o| o.order_link_id == client_order_id)
            {
                return Ok(found);
            }
        }
        Err(RestError::Api { status: 200, code: 170_213, msg: "Order does not exist.".into() })
    }

    /// Cancels an order by our client id (`POST /v5/order/cancel`), then reads its final state.
    /// A cancel that Bybit accepted but whose state cannot be read is an unknown outcome for the
    /// order's fills: the caller queries it.
    ///
    /// # Errors
    /// [`RestError::is_not_open`] when it is not open there.
    pub async fn cancel(
        &self,
        symbol: &Symbol,
        client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<VenueOrder, RestError> {
        let body = serde_json::json!({
            "category": self.category.name,
            "symbol": symbol.as_str(),
            "orderLinkId": client_order_id,
        })
        .to_string();
        let _: serde_json::Value =
            self.signed(reqwest::Method::POST, "/v5/order/cancel", body, signer).await?;
        self.query(symbol, client_order_id, signer).await.map_err(|err| {
            RestError::NoAnswer(format!("cancel accepted, final state not read: {err}"))
        })
    }

    /// The trades of the order `client_order_id` with the fee of each and its coin
    /// (`GET /v5/execution/list?orderLinkId=…&execType=Trade`, the last 7 days), oldest first.
    /// Bybit's order answers carry cumulative figures only; these make a position
    /// commission-aware (spot takes the fee in the coin received).
    ///
    /// # Errors
    /// The call failed or an execution's numbers are not numbers.
    pub async fn fills(
        &self,
        symbol: &Symbol,
        client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<Vec<OrderFill>, RestError> {
        let query = format!(
            "category={}&symbol={}&orderLinkId={}&execType=Trade&limit=100",
            self.category.name,
            symbol.as_str(),
            urlencode(client_order_id)
        );
        let page: List<RawExecution> =
            self.signed(reqwest::Method::GET, "/v5/execution/list", query, signer).await?;
        let mut fills = Vec::new();
        // Newest first as Bybit sorts them; the engine wants them in the order they happened.
        for exec in page.list.iter().rev().filter(|e| e.exec_type == "Trade") {
            let number = |field: &str, s: &str| -> Result<Decimal, RestError> {
                s.parse().map_err(|_| RestError::Decode(format!("execution {field} {s:?}")))
            };
            let fee_asset = match exec.fee_currency.as_str() {
                "" if self.category.derivatives => settle_coin(&exec.symbol).to_owned(),
                "" => spot_fee_coin(&exec.symbol, &exec.side),
                coin => coin.to_owned(),
            };
            fills.push(OrderFill {
                price: number("execPrice", &exec.exec_price)?,
                qty: number("execQty", &exec.exec_qty)?,
                fee: number("execFee", &exec.exec_fee)?,
                fee_asset,
            });
        }
        Ok(fills)
    }
}

/// The JSON body of `POST /v5/order/create` for `order`.
///
/// # Errors
/// [`RestError::Unsupported`] for a stop-limit or a trailing stop: Keel does not route those to
/// Bybit yet, and refuses them rather than send something else.
pub fn create_body(
    category: &Category,
    symbol: &Symbol,
    order: &Order,
) -> Result<String, RestError> {
    let mut body = order_fields(category, symbol, order);
    if reduce_only(category, order) {
        // An exit can only shrink the position, never open or flip one.
        body["reduceOnly"] = true.into();
    }
    match order.order_type {
        OrderType::Limit { price, time_in_force } => {
            body["orderType"] = "Limit".into();
            body["price"] = price.normalize().to_string().into();
            body["timeInForce"] = match time_in_force {
                TimeInForce::Gtc => "GTC",
                TimeInForce::Ioc => "IOC",
                TimeInForce::Fok => "FOK",
                TimeInForce::PostOnly => "PostOnly",
            }
            .into();
        }
        OrderType::StopLimit { .. } | OrderType::TrailingStop { .. } => {
            return Err(RestError::Unsupported(
                "stop-limit and trailing-stop orders are not routed to bybit".into(),
            ));
        }
        OrderType::Market | OrderType::Stop { .. } => {
            body["orderType"] = "Market".into();
            if category.name == "spot" {
                body["marketUnit"] = "baseCoin".into();
            }
        }
    }
    Ok(body.to_string())
}

/// What every create says of `order`: category, symbol, side, the quantity still to fill and
/// our client order id as `orderLinkId`.
fn order_fields(category: &Category, symbol: &Symbol, order: &Order) -> serde_json::Value {
    let side = match order.side {
        Side::Buy => "Buy",
        Side::Sell => "Sell",
    };
    serde_json::json!({
        "category": category.name,
        "symbol": symbol.as_str(),
        "side": side,
        "qty": order.remaining().normalize().to_string(),
        "orderLinkId": order.client_order_id,
    })
}

/// Whether `order` goes to the venue reduce-only: an exit (take-profit, stop-loss, close) on a
/// derivatives category. Spot has no positions to reduce.
pub fn reduce_only(category: &Category, order: &Order) -> bool {
    category.derivatives
        && matches!(
            order.origin,
            OrderOrigin::TakeProfit | OrderOrigin::StopLoss | OrderOrigin::Close
        )
}

/// The coin Bybit spot takes a taker's fee in when an execution does not say: the coin received
/// (the base on a buy, the quote on a sell).
pub fn spot_fee_coin(symbol: &str, side: &str) -> String {
    let quote = ["USDT", "USDC", "BTC", "ETH", "EUR"]
        .into_iter()
        .find(|q| symbol.ends_with(q) && symbol.len() > q.len())
        .unwrap_or("");
    if side == "Buy" { symbol[..symbol.len() - quote.len()].to_owned() } else { quote.to_owned() }
}

/// Which leg of a bracket a conditional order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BracketLeg {
    /// The take-profit: a limit at its price once the price has reached it.
    TakeProfit,
    /// The stop-loss: a market order once the price has reached its stop.
    StopLoss,
}

/// Bybit's `triggerDirection` for a bracket leg exiting on `side`: `1` fires when the last
/// price rises to the trigger, `2` when it falls to it. A long's exits sell: its take-profit
/// is above the market (rises), its stop below (falls); a short's the other way round.
pub fn trigger_direction(leg: BracketLeg, side: Side) -> u8 {
    match (leg, side) {
        (BracketLeg::TakeProfit, Side::Sell) | (BracketLeg::StopLoss, Side::Buy) => 1,
        (BracketLeg::TakeProfit, Side::Buy) | (BracketLeg::StopLoss, Side::Sell) => 2,
    }
}

/// The JSON body of `POST /v5/order/create` for one leg of a bracket as a conditional order on
/// a derivatives category: `triggerPrice` makes it conditional (it holds no margin until it
/// fires), `triggerDirection` says which way the last price must cross (`triggerBy` =
/// `LastPrice`, as Keel's own stops watch trades), and `reduceOnly` that it can only shrink the
/// position, never open or flip one. The stop-loss is also `closeOnTrigger`: when it fires
/// Bybit frees margin from other orders rather than let it fail. The take-profit fires into a
/// GTC limit at its price; the stop-loss into a market order. `orderLinkId` is the leg's own
/// client order id.
///
/// # Errors
/// [`RestError::Unsupported`] on spot, or for a leg that is not a limit (take-profit) or a
/// stop (stop-loss); nothing is sent.
pub fn conditional_body(
    category: &Category,
    symbol: &Symbol,
    order: &Order,
    leg: BracketLeg,
) -> Result<String, RestError> {
    if !category.derivatives {
        return Err(RestError::Unsupported("conditional bracket legs are derivatives only".into()));
    }
    let mut body = order_fields(category, symbol, order);
    body["triggerDirection"] = trigger_direction(leg, order.side).into();
    body["triggerBy"] = "LastPrice".into();
    body["reduceOnly"] = true.into();
    match (leg, order.order_type) {
        (BracketLeg::TakeProfit, OrderType::Limit { price, .. }) => {
            body["orderType"] = "Limit".into();
            body["price"] = price.normalize().to_string().into();
            body["triggerPrice"] = price.normalize().to_string().into();
            body["timeInForce"] = "GTC".into();
        }
        (BracketLeg::StopLoss, OrderType::Stop { stop_price }) => {
            body["orderType"] = "Market".into();
            body["triggerPrice"] = stop_price.normalize().to_string().into();
            body["closeOnTrigger"] = true.into();
        }
        _ => {
            return Err(RestError::Unsupported(
                "a bracket is a take-profit limit and a stop-loss stop".into(),
            ));
        }
    }
    Ok(body.to_string())
}

impl RestClient {
    /// Sends one bracket leg as a conditional order (`POST /v5/order/create`, body from
    /// [`conditional_body`]) and nothing else: the caller reads it back by its client id.
    ///
    /// # Errors
    /// See [`RestError::is_unknown_outcome`]: an unknown outcome must be queried, never resent.
    pub async fn create_conditional(
        &self,
        symbol: &Symbol,
        order: &Order,
        leg: BracketLeg,
        signer: Signer<'_>,
    ) -> Result<(), RestError> {
        let body = conditional_body(self.category, symbol, order, leg)?;
        let _: serde_json::Value =
            self.signed(reqwest::Method::POST, "/v5/order/create", body, signer).await?;
        Ok(())
    }
}
