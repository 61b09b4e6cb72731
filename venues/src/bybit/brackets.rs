//! Native brackets on Bybit derivatives: a live bracket's take-profit and stop-loss rest at
//! Bybit as two conditional orders, so the position stays protected while Keel is down.
//!
//! Follows <https://bybit-exchange.github.io/docs/v5/order/create-order> (conditional orders:
//! `triggerPrice`, `triggerDirection`, `triggerBy`, `reduceOnly`, `closeOnTrigger`),
//! `…/order/open-order` (a linear look-up lists conditional orders with the others, by
//! `orderLinkId`) and `…/order/cancel-order`.
//!
//! Why conditional orders and not the position's own take-profit/stop-loss
//! (`/v5/position/trading-stop`, `tpslMode=Partial`): those carry no `orderLinkId`, so a leg
//! could not be found again by Keel's id after a lost answer or a restart, and they answer
//! for the whole position rather than for the bracket's quantity. A conditional order is one
//! leg under its own client order id, looked up and cancelled like any order, holds no margin
//! until it fires, and `reduceOnly` keeps it from ever opening or flipping a position.
//!
//! Bybit has no one-cancels-the-other link between two derivatives orders: the list is Keel's.
//! Its id names both legs ([`list_leg_ids`]); when one leg fills, the engine cancels the other
//! (whether Keel saw the fill live or learns it from a look-up after a restart). Until then the
//! other leg is reduce-only: if it fired with the position already closed, Bybit would cancel
//! it rather than open one.
//!
//! The list is both legs or neither, sent by [`place_both`] (shared with Binance futures): the
//! take-profit goes first, the stop-loss only once the take-profit is known to be there, and a
//! refused stop-loss takes the take-profit back. A leg whose create answer was lost is looked
//! up by its client id, never sent again; one still not found after the venue's `recv_window`
//! was never received.

use std::time::Duration;

use super::connector::{BybitRouter, route_error};
use super::rest::BracketLeg;
use crate::bracket_legs::{LegRole, LegVenue, place_both};
use crate::routing::{OrderListLegs, OrderReport, RouteError, RouteErrorKind, RouteFuture, Signer};
use keel_core::engine::list_leg_ids;
use keel_core::market::Symbol;
use keel_core::trading::Order;

/// [`OrderRouter::place_list`](crate::routing::OrderRouter::place_list) on Bybit: the
/// take-profit, then the stop-loss, then both read back.
pub(super) async fn place(
    router: &BybitRouter,
    symbol: &Symbol,
    legs: OrderListLegs<'_>,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    let (take_profit, stop_loss) = (legs.take_profit, legs.stop_loss);
    let ids = leg_ids(router, legs.list_client_order_id)?;
    if ids != (take_profit.client_order_id.clone(), stop_loss.client_order_id.clone())
        || take_profit.side != stop_loss.side
        || take_profit.remaining() != stop_loss.remaining()
    {
        return Err(refused("a bracket's legs share side and quantity and are the list's own"));
    }
    place_both(&ConditionalLegs { router, symbol, signer }, take_profit, stop_loss).await?;
    read_legs(router, symbol, &[ids.0, ids.1], signer).await
}

/// [`OrderRouter::cancel_list`](crate::routing::OrderRouter::cancel_list) on Bybit: each leg
/// cancelled by its client id; a leg no longer open is reported as it ended. Neither open is
/// [`RouteErrorKind::NotOpen`].
pub(super) async fn cancel(
    router: &BybitRouter,
    symbol: &Symbol,
    list_client_order_id: &str,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    let (take_profit, stop_loss) = leg_ids(router, list_client_order_id)?;
    let rest = router.rest();
    let mut reports = Vec::with_capacity(2);
    let mut canceled = false;
    for id in [take_profit, stop_loss] {
        let order = match rest.cancel(symbol, &id, signer).await {
            Ok(order) => {
                canceled = true;
                order
            }
            Err(err) if err.is_not_open() => match rest.query(symbol, &id, signer).await {
                Ok(order) => order,
                Err(err) if err.is_not_open() => continue,
                Err(err) => return Err(route_error(err)),
            },
            Err(err) => return Err(route_error(err)),
        };
        reports.push(router.with_fills(symbol, order, signer).await);
    }
    if !canceled {
        return Err(RouteError {
            kind: RouteErrorKind::NotOpen,
            message: format!("neither leg of {list_client_order_id} is open at bybit"),
        });
    }
    Ok(reports)
}

/// [`OrderRouter::query_list`](crate::routing::OrderRouter::query_list) on Bybit: each leg by
/// its client id, with its trades; [`RouteErrorKind::NoSuchOrder`] when Bybit has neither.
pub(super) async fn query(
    router: &BybitRouter,
    symbol: &Symbol,
    list_client_order_id: &str,
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    let (take_profit, stop_loss) = leg_ids(router, list_client_order_id)?;
    let reports = read_legs(router, symbol, &[take_profit, stop_loss], signer).await?;
    if reports.is_empty() {
        return Err(RouteError {
            kind: RouteErrorKind::NoSuchOrder,
            message: format!("bybit has neither leg of {list_client_order_id}"),
        });
    }
    Ok(reports)
}

/// The legs' client ids, on a derivatives category only (spot keeps Keel's emulation).
fn leg_ids(router: &BybitRouter, list: &str) -> Result<(String, String), RouteError> {
    let category = router.rest().category();
    if !category.derivatives {
        return Err(refused(&format!(
            "{} has no linked take-profit and stop-loss here; brackets are emulated",
            category.venue
        )));
    }
    list_leg_ids(list).ok_or_else(|| refused(&format!("{list} is not a bracket list's id")))
}

fn refused(message: &str) -> RouteError {
    RouteError { kind: RouteErrorKind::Rejected, message: message.to_owned() }
}

/// One bracket's legs as conditional orders on `symbol`, for [`place_both`].
struct ConditionalLegs<'a> {
    router: &'a BybitRouter,
    symbol: &'a Symbol,
    signer: Signer<'a>,
}

impl LegVenue for ConditionalLegs<'_> {
    fn create<'a>(&'a self, leg: &'a Order, role: LegRole) -> RouteFuture<'a, ()> {
        Box::pin(async move {
            let kind = match role {
                LegRole::TakeProfit => BracketLeg::TakeProfit,
                LegRole::StopLoss => BracketLeg::StopLoss,
            };
            let rest = self.router.rest();
            rest.create_conditional(self.symbol, leg, kind, self.signer).await.map_err(route_error)
        })
    }

    fn look_up<'a>(&'a self, client_order_id: &'a str) -> RouteFuture<'a, ()> {
        Box::pin(async move {
            // An `orderLinkId` Bybit does not have is `NotOpen`.
            let rest = self.router.rest();
            rest.query(self.symbol, client_order_id, self.signer).await.map_err(route_error)?;
            Ok(())
        })
    }

    fn withdraw<'a>(&'a self, leg: &'a Order) -> RouteFuture<'a, ()> {
        Box::pin(async move {
            let id = &leg.client_order_id;
            match self.router.rest().cancel(self.symbol, id, self.signer).await {
                // Already gone (or filled: its report comes with the look-up the engine makes).
                Ok(_) => Ok(()),
                Err(err) if err.is_not_open() => Ok(()),
                Err(err) => Err(route_error(err)),
            }
        })
    }

    fn accept_delay(&self) -> Duration {
        Duration::from_millis(self.router.rest().recv_window_ms())
    }
}

/// Each leg Bybit has, with its trades; a leg it does not have is left out.
async fn read_legs(
    router: &BybitRouter,
    symbol: &Symbol,
    ids: &[String],
    signer: Signer<'_>,
) -> Result<Vec<OrderReport>, RouteError> {
    let mut reports = Vec::with_capacity(ids.len());
    for id in ids {
        match router.rest().query(symbol, id, signer).await {
            Ok(order) => reports.push(router.with_fills(symbol, order, signer).await),
            Err(err) if err.is_not_open() => {}
            Err(err) => return Err(route_error(err)),
        }
    }
    Ok(reports)
}
