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
//! The list is both legs or neither: the take-profit goes first, the stop-loss only once the
//! take-profit is known to be there, and a refused stop-loss takes the take-profit back. A leg
//! whose create answer was lost is looked up by its client id, never sent again; one still not
//! found after the venue's `recv_window` was never received.

use std::time::Duration;

use super::connector::{BybitRouter, route_error};
use super::rest::BracketLeg;
use crate::routing::{OrderListLegs, OrderReport, RouteError, RouteErrorKind, Signer};
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
    send_leg(router, symbol, take_profit, BracketLeg::TakeProfit, signer).await?;
    if let Err(err) = send_leg(router, symbol, stop_loss, BracketLeg::StopLoss, signer).await {
        if err.kind != RouteErrorKind::UnknownOutcome {
            // Nothing of the stop-loss is at the venue: take the take-profit back, so the list
            // is refused whole (and the engine emulates the bracket instead).
            withdraw(router, symbol, take_profit, signer).await?;
        }
        return Err(err);
    }
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

/// Sends one leg; `Ok` once it is known to be at the venue. A lost answer is settled by
/// looking the leg up (now, and once more after the venue's `recv_window`, past which a
/// request it has not seen can no longer be accepted): found is `Ok`, never found is
/// [`RouteErrorKind::Rejected`], a look-up that fails leaves it unknown.
async fn send_leg(
    router: &BybitRouter,
    symbol: &Symbol,
    order: &Order,
    leg: BracketLeg,
    signer: Signer<'_>,
) -> Result<(), RouteError> {
    let rest = router.rest();
    let lost = match rest.create_conditional(symbol, order, leg, signer).await {
        Ok(()) => return Ok(()),
        Err(err) if err.is_unknown_outcome() => err,
        Err(err) => return Err(route_error(err)),
    };
    let id = &order.client_order_id;
    let unknown = |why: String| RouteError { kind: RouteErrorKind::UnknownOutcome, message: why };
    for wait in [false, true] {
        if wait {
            tokio::time::sleep(Duration::from_millis(rest.recv_window_ms())).await;
        }
        match rest.query(symbol, id, signer).await {
            Ok(_) => return Ok(()),
            Err(err) if err.is_not_open() => {}
            Err(err) => return Err(unknown(format!("{lost}; then its look-up failed: {err}"))),
        }
    }
    Err(refused(&format!("{lost}; {id} never reached bybit")))
}

/// Cancels a leg already placed because its partner was refused. A cancel that fails leaves
/// the list's outcome unknown (the caller looks it up).
async fn withdraw(
    router: &BybitRouter,
    symbol: &Symbol,
    order: &Order,
    signer: Signer<'_>,
) -> Result<(), RouteError> {
    match router.rest().cancel(symbol, &order.client_order_id, signer).await {
        Ok(_) => Ok(()),
        // Already gone (or filled: its report comes with the look-up the engine makes).
        Err(err) if err.is_not_open() => Ok(()),
        Err(err) => Err(RouteError {
            kind: RouteErrorKind::UnknownOutcome,
            message: format!("the stop-loss was refused and the take-profit not withdrawn: {err}"),
        }),
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
