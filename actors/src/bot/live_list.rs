//! A native bracket's order list at the venue: both legs placed, canceled and looked up in one
//! request ([`OrderRouter::place_list`](keel_venues::routing::OrderRouter::place_list) and its
//! siblings), each answer split back into one [`LiveResult`] per leg.
//!
//! The rules of [`super::live`] hold per leg: an unknown outcome leaves both legs `unknown` and
//! they are queried (by the list, then each leg by its own client id), never sent again; a list
//! the venue never received is believed only after the not-found grace; a cancel refused as
//! "not open" is closed only once the query shows both legs final.

use keel_core::engine::ExecOutcome;
use keel_core::market::Symbol;
use keel_core::trading::Order;
use keel_venues::routing::{OrderListLegs, OrderReport, RouteError, RouteErrorKind};

use super::live::{BoxSigner, LiveLink, LiveResult, closed_or_failed, venue_outcome};

/// Places both legs as one list; one result per leg, the take-profit's first.
pub(super) async fn place(
    link: &LiveLink,
    symbol: &Symbol,
    take_profit: &Order,
    stop_loss: &Order,
    signer: &BoxSigner,
) -> Vec<LiveResult> {
    let list = take_profit.venue_list.clone().unwrap_or_default();
    let legs = OrderListLegs { list_client_order_id: &list, take_profit, stop_loss };
    match link.router.place_list(symbol, legs, signer.as_ref()).await {
        Ok(reports) => [take_profit, stop_loss]
            .into_iter()
            .map(|leg| LiveResult { order_answered: true, ..leg_result(symbol, leg, &reports) })
            .collect(),
        Err(err) => {
            [take_profit, stop_loss].into_iter().map(|leg| failed_place(leg, &err)).collect()
        }
    }
}

/// Cancels the list `leg` belongs to; the leg's result first, then its partner's.
pub(super) async fn cancel(
    link: &LiveLink,
    symbol: &Symbol,
    leg: &Order,
    signer: &BoxSigner,
) -> Vec<LiveResult> {
    let list = leg.venue_list.clone().unwrap_or_default();
    match link.router.cancel_list(symbol, &list, signer.as_ref()).await {
        Ok(reports) => both(symbol, leg, &reports)
            .into_iter()
            .map(|r| LiveResult { order_answered: true, ..r })
            .collect(),
        // Not open there (a leg filled and the other expired, or it never arrived): ask.
        Err(err) if matches!(err.kind, RouteErrorKind::NotOpen | RouteErrorKind::NoSuchOrder) => {
            let mut results = query(link, symbol, leg, signer).await;
            if let Some(own) = results.first_mut() {
                *own =
                    closed_or_failed(std::mem::replace(own, LiveResult::new(leg.id)), &err.message);
            }
            results
        }
        Err(err) => {
            tracing::warn!(order_id = leg.id, list, error = %err, "order list cancel did not go through");
            vec![LiveResult {
                cancel_failed: true,
                venue_error: Some(err.to_string()),
                ..LiveResult::new(leg.id)
            }]
        }
    }
}

/// Looks the list `leg` belongs to up; the leg's result first, then its partner's.
pub(super) async fn query(
    link: &LiveLink,
    symbol: &Symbol,
    leg: &Order,
    signer: &BoxSigner,
) -> Vec<LiveResult> {
    let list = leg.venue_list.clone().unwrap_or_default();
    match link.router.query_list(symbol, &list, signer.as_ref()).await {
        Ok(reports) => both(symbol, leg, &reports),
        Err(err) if err.kind == RouteErrorKind::NoSuchOrder => {
            // The caller decides whether it is too soon to believe (the not-found grace).
            let mut ids = vec![leg.id];
            ids.extend(leg.oco_with);
            ids.into_iter().map(|id| LiveResult::report(id, ExecOutcome::NotFound)).collect()
        }
        Err(err) => {
            vec![LiveResult { venue_error: Some(err.to_string()), ..LiveResult::new(leg.id) }]
        }
    }
}

/// The leg's result and, when the venue reported it, its partner's.
fn both(symbol: &Symbol, leg: &Order, reports: &[OrderReport]) -> Vec<LiveResult> {
    let mut results = vec![leg_result(symbol, leg, reports)];
    if let Some(partner) = leg.oco_with {
        let other = reports.iter().find(|r| r.client_order_id != leg.client_order_id);
        if let Some(report) = other {
            results.push(LiveResult::report(partner, venue_outcome(symbol, report.clone())));
        }
    }
    results
}

/// What the venue's list answer says of one leg; a leg it did not list is left unknown (it is
/// queried, never sent again).
fn leg_result(symbol: &Symbol, leg: &Order, reports: &[OrderReport]) -> LiveResult {
    match reports.iter().find(|r| r.client_order_id == leg.client_order_id) {
        Some(report) => LiveResult::report(leg.id, venue_outcome(symbol, report.clone())),
        None => {
            let why = "the venue's order list answer did not list this leg".to_owned();
            LiveResult {
                venue_error: Some(why.clone()),
                ..LiveResult::report(leg.id, ExecOutcome::Unknown(why))
            }
        }
    }
}

/// A list placement that failed, for one leg: unknown (query, never resend) or rejected.
fn failed_place(leg: &Order, err: &RouteError) -> LiveResult {
    match err.kind {
        RouteErrorKind::UnknownOutcome => LiveResult {
            venue_error: Some(err.to_string()),
            ..LiveResult::report(leg.id, ExecOutcome::Unknown(err.to_string()))
        },
        _ => super::live::not_placed(leg.id, err),
    }
}
