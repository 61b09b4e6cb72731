//! A native bracket on a venue that does not link its two legs (Binance USD-M futures'
//! conditional orders, Bybit's derivatives conditional orders): the take-profit and the
//! stop-loss are two orders sent one after the other, and this is the one flow both routers
//! send them with, so the list ends as both legs or neither.
//!
//! - The take-profit goes first; the stop-loss only once the take-profit is known to be there.
//! - A create whose answer was lost (timeout, 5xx, connection reset) is never sent again: it is
//!   settled by looking the leg up by its client id, again and again until the venue's accept
//!   delay (its receive window) has passed, after which a request it has not seen can no longer
//!   be accepted. Found, the flow goes on as if the answer had come; never found, the leg was
//!   not placed. Without this, a take-profit whose answer was lost would rest at the venue alone
//!   and the position would have no stop at all.
//! - A stop-loss refused (or never received) takes the take-profit back, so the list is
//!   refused whole and Keel emulates the bracket instead.
//! - Whatever cannot be settled (a look-up or the take-back fails) is
//!   [`RouteErrorKind::UnknownOutcome`]: the caller queries the list later.

use std::time::{Duration, Instant};

use crate::routing::{RouteError, RouteErrorKind, RouteFuture};
use keel_core::trading::Order;

/// How often a leg whose create answer was lost is looked up while the venue may still accept
/// it.
pub const LOOK_UP_EVERY: Duration = Duration::from_millis(500);

/// Which leg of a bracket an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegRole {
    /// The take-profit limit, sent first.
    TakeProfit,
    /// The stop-loss stop, sent once the take-profit is there.
    StopLoss,
}

/// What a venue does with one leg of a bracket, by the leg's client order id.
pub trait LegVenue: Sync {
    /// Sends the leg once. A lost answer is [`RouteErrorKind::UnknownOutcome`].
    fn create<'a>(&'a self, leg: &'a Order, role: LegRole) -> RouteFuture<'a, ()>;

    /// Looks the leg up: `Ok` when the venue has it (in any state),
    /// [`RouteErrorKind::NoSuchOrder`] or [`RouteErrorKind::NotOpen`] when it has not received
    /// it.
    fn look_up<'a>(&'a self, client_order_id: &'a str) -> RouteFuture<'a, ()>;

    /// Cancels a leg already placed because its partner is not there: `Ok` once it no longer
    /// works at the venue (as the venue's rules say); a failure leaves the list unknown.
    fn withdraw<'a>(&'a self, leg: &'a Order) -> RouteFuture<'a, ()>;

    /// How long after it was sent the venue may still accept a request.
    fn accept_delay(&self) -> Duration;
}

/// Places the take-profit, then the stop-loss: `Ok` once both are at the venue.
///
/// # Errors
/// [`RouteErrorKind::Rejected`] (or the venue's own class of refusal) when the list is not at
/// the venue, no leg of it left behind; [`RouteErrorKind::UnknownOutcome`] when that cannot be
/// known yet.
pub async fn place_both(
    venue: &impl LegVenue,
    take_profit: &Order,
    stop_loss: &Order,
) -> Result<(), RouteError> {
    send(venue, take_profit, LegRole::TakeProfit).await?;
    let Err(err) = send(venue, stop_loss, LegRole::StopLoss).await else { return Ok(()) };
    if err.kind == RouteErrorKind::UnknownOutcome {
        return Err(err);
    }
    // Half a bracket is no bracket: take the take-profit back, so the list is refused whole.
    match venue.withdraw(take_profit).await {
        Ok(()) => Err(err),
        Err(withdraw) => Err(RouteError {
            kind: RouteErrorKind::UnknownOutcome,
            message: format!(
                "{err}; then the take-profit {} was not taken back: {withdraw}",
                take_profit.client_order_id
            ),
        }),
    }
}

/// Sends one leg: `Ok` once it is known to be at the venue.
async fn send(venue: &impl LegVenue, leg: &Order, role: LegRole) -> Result<(), RouteError> {
    let lost = match venue.create(leg, role).await {
        Ok(()) => return Ok(()),
        Err(err) if err.kind == RouteErrorKind::UnknownOutcome => err,
        Err(err) => return Err(err),
    };
    let id = &leg.client_order_id;
    let deadline = Instant::now() + venue.accept_delay();
    loop {
        match venue.look_up(id).await {
            Ok(()) => return Ok(()),
            Err(err)
                if matches!(err.kind, RouteErrorKind::NoSuchOrder | RouteErrorKind::NotOpen) => {}
            Err(err) => {
                return Err(RouteError {
                    kind: RouteErrorKind::UnknownOutcome,
                    message: format!("{lost}; then the look-up of {id} failed: {err}"),
                });
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(LOOK_UP_EVERY)).await;
    }
    Err(RouteError {
        kind: RouteErrorKind::Rejected,
        message: format!("{lost}; {id} never reached the venue"),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use keel_core::trading::{OrderOrigin, OrderType, Side};
    use keel_testkit::routing::new_order;
    use rust_decimal::Decimal;

    /// A venue that does what each leg's script says, and counts what it was asked.
    #[derive(Default)]
    struct Scripted {
        /// Per create, in order: what happens (`None`: accepted and answered).
        creates: Mutex<Vec<Option<(RouteErrorKind, bool)>>>,
        /// Client ids the venue holds.
        held: Mutex<Vec<String>>,
        /// Every request, in order.
        log: Mutex<Vec<String>>,
        withdraw_fails: bool,
    }

    fn fail(kind: RouteErrorKind) -> RouteError {
        RouteError { kind, message: format!("{kind:?}") }
    }

    impl LegVenue for Scripted {
        fn create<'a>(&'a self, leg: &'a Order, _: LegRole) -> RouteFuture<'a, ()> {
            Box::pin(async move {
                let id = leg.client_order_id.clone();
                self.log.lock().unwrap().push(format!("create {id}"));
                let next = self.creates.lock().unwrap().remove(0);
                match next {
                    None => {
                        self.held.lock().unwrap().push(id);
                        Ok(())
                    }
                    Some((kind, stored)) => {
                        if stored {
                            self.held.lock().unwrap().push(id);
                        }
                        Err(fail(kind))
                    }
                }
            })
        }

        fn look_up<'a>(&'a self, client_order_id: &'a str) -> RouteFuture<'a, ()> {
            Box::pin(async move {
                self.log.lock().unwrap().push(format!("look up {client_order_id}"));
                let held = self.held.lock().unwrap().iter().any(|h| h == client_order_id);
                if held { Ok(()) } else { Err(fail(RouteErrorKind::NoSuchOrder)) }
            })
        }

        fn withdraw<'a>(&'a self, leg: &'a Order) -> RouteFuture<'a, ()> {
            Box::pin(async move {
                self.log.lock().unwrap().push(format!("withdraw {}", leg.client_order_id));
                if self.withdraw_fails {
                    return Err(fail(RouteErrorKind::UnknownOutcome));
                }
                self.held.lock().unwrap().retain(|h| *h != leg.client_order_id);
                Ok(())
            })
        }

        fn accept_delay(&self) -> Duration {
            Duration::from_millis(50)
        }
    }

    fn leg(id: &str, origin: OrderOrigin) -> Order {
        Order { origin, ..new_order(id, Side::Sell, OrderType::Market, Decimal::ONE) }
    }

    async fn run(venue: &Scripted) -> Result<(), RouteError> {
        let tp = leg("tp", OrderOrigin::TakeProfit);
        let sl = leg("sl", OrderOrigin::StopLoss);
        place_both(venue, &tp, &sl).await
    }

    fn creates(venue: &Scripted) -> usize {
        venue.log.lock().unwrap().iter().filter(|l| l.starts_with("create")).count()
    }

    #[tokio::test]
    async fn a_take_profit_whose_answer_was_lost_but_arrived_is_followed_by_its_stop_loss() {
        let venue = Scripted::default();
        *venue.creates.lock().unwrap() = vec![Some((RouteErrorKind::UnknownOutcome, true)), None];
        run(&venue).await.unwrap();
        assert_eq!(*venue.held.lock().unwrap(), ["tp", "sl"]);
        assert_eq!(*venue.log.lock().unwrap(), ["create tp", "look up tp", "create sl"]);
    }

    #[tokio::test]
    async fn a_take_profit_never_received_is_looked_for_until_the_accept_delay_then_refused() {
        let venue = Scripted::default();
        *venue.creates.lock().unwrap() = vec![Some((RouteErrorKind::UnknownOutcome, false))];
        let started = Instant::now();
        let err = run(&venue).await.unwrap_err();
        assert_eq!(err.kind, RouteErrorKind::Rejected, "{}", err.message);
        assert!(started.elapsed() >= venue.accept_delay());
        assert_eq!(creates(&venue), 1);
        let log = venue.log.lock().unwrap();
        assert!(log.iter().filter(|l| *l == "look up tp").count() >= 2, "{log:?}");
        assert!(venue.held.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_refused_stop_loss_takes_the_take_profit_back_and_a_failed_take_back_is_unknown() {
        for withdraw_fails in [false, true] {
            let venue = Scripted { withdraw_fails, ..Scripted::default() };
            *venue.creates.lock().unwrap() = vec![None, Some((RouteErrorKind::Rejected, false))];
            let err = run(&venue).await.unwrap_err();
            let expected = if withdraw_fails {
                RouteErrorKind::UnknownOutcome
            } else {
                RouteErrorKind::Rejected
            };
            assert_eq!(err.kind, expected, "{}", err.message);
            assert_eq!(venue.held.lock().unwrap().is_empty(), !withdraw_fails);
            assert_eq!(venue.log.lock().unwrap().last().unwrap(), "withdraw tp");
        }
    }

    #[tokio::test]
    async fn a_refused_take_profit_sends_nothing_more_and_a_lost_stop_loss_is_settled_too() {
        let venue = Scripted::default();
        *venue.creates.lock().unwrap() = vec![Some((RouteErrorKind::Rejected, false))];
        assert_eq!(run(&venue).await.unwrap_err().kind, RouteErrorKind::Rejected);
        assert_eq!(*venue.log.lock().unwrap(), ["create tp"]);

        let venue = Scripted::default();
        *venue.creates.lock().unwrap() = vec![None, Some((RouteErrorKind::UnknownOutcome, true))];
        run(&venue).await.unwrap();
        assert_eq!(*venue.held.lock().unwrap(), ["tp", "sl"]);
        assert_eq!(creates(&venue), 2);
    }
}
