//! A live bot's link to its venue: the engine's [`Outbound`] requests go out through the venue's
//! order router (the seam's [`OrderRouter`]), and what the venue answers comes back as
//! [`ExecReport`]s.
//!
//! The rules, in the order they matter for money:
//! - a request is sent only after the order it concerns is durable (the actor calls
//!   [`execute`] from its commit callback), so the store always knows every order the venue may
//!   have;
//! - the client order id is fixed per order, so a query after a lost answer finds it, and a place
//!   is never retried blind: an unknown outcome (timeout, 5xx) is queried, not re-sent;
//! - the venue's clock is the router's business: it stamps every signed request with the
//!   venue's time and, on a refusal for the timestamp, measures the clock and sends that request
//!   once more (place, cancel and query alike). A [`RouteErrorKind::ClockSkew`] that still comes
//!   back is a second refusal: reported as a rejection (a place) or a failure (the others), not
//!   retried here;
//! - the payload is signed by the vault; the secret never leaves it;
//! - every request asks the account's circuit breaker ([`crate::breaker`]) first: while it is
//!   open nothing goes out (a place is rejected as not sent, a cancel is left to be asked
//!   again, a query waits for the next poll), and each outcome is reported to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::breaker::{Breaker, Outcome};
use crate::mailbox::ask;
use crate::vault::{Sign, VaultAddress};
use keel_core::engine::{ExecOutcome, ExecReport, Outbound, VenueFillReport};
use keel_core::market::Symbol;
use keel_core::trading::{Commission, Order};
use keel_venues::routing::{OrderReport, OrderRouter, RouteError, RouteErrorKind};

/// How long the vault may take to sign.
const SIGN_DEADLINE: Duration = Duration::from_secs(2);
/// Added to the venue's accept delay for the "not found" grace (network and clock slack).
const NOT_FOUND_SLACK: Duration = Duration::from_secs(2);

/// What a live bot trades through.
#[derive(Debug, Clone)]
pub struct LiveLink {
    /// The venue's order router (shared by every bot on the venue).
    pub router: Arc<dyn OrderRouter>,
    /// The vault, which signs.
    pub vault: VaultAddress,
    /// The bot's owner.
    pub user_id: u64,
    /// The exchange account (vault credential) to sign with.
    pub credential_id: u64,
    /// The account's circuit breaker, shared with every bot on it.
    pub breaker: Arc<Breaker>,
    /// Where the account's user data stream and balances are, shared with every bot on it.
    pub accounts: crate::account::Accounts,
}

impl LiveLink {
    /// Before this long after an order was last sent, "no such order" may only mean "not
    /// arrived yet": the venue accepts a request up to its
    /// [`accept_delay`](OrderRouter::accept_delay) (Binance's configured `recvWindow`) after its
    /// timestamp.
    pub fn not_found_grace(&self) -> Duration {
        self.router.accept_delay().saturating_add(NOT_FOUND_SLACK)
    }
}

/// The result of one request.
#[derive(Debug)]
pub struct LiveResult {
    /// The order it concerned.
    pub order_id: u64,
    /// What was learned, if anything.
    pub report: Option<ExecReport>,
    /// A cancel that did not go through (the engine may ask again).
    pub cancel_failed: bool,
    /// The venue could not be reached or did not say what happened (counts towards pausing the
    /// bot).
    pub venue_error: Option<String>,
    /// A place or cancel the venue answered (ends a run of failures; a query does not: a venue
    /// that answers queries but fails every order is still failing).
    pub order_answered: bool,
    /// Not sent, by Keel's own decision: the account's circuit breaker is open, or its order
    /// budget held the order back. Says nothing about the venue.
    pub refused: bool,
}

impl LiveResult {
    pub(super) fn new(order_id: u64) -> Self {
        Self {
            order_id,
            report: None,
            cancel_failed: false,
            venue_error: None,
            order_answered: false,
            refused: false,
        }
    }

    pub(super) fn report(order_id: u64, outcome: ExecOutcome) -> Self {
        Self { report: Some(ExecReport { order_id, outcome }), ..Self::new(order_id) }
    }
}

/// Sends `requests` in order and reports what each achieved. A request about one leg of a
/// native order list learns about both: the other leg's answer serves its own request later in
/// the batch (nothing is sent twice), or is reported at the end.
pub async fn execute(link: LiveLink, symbol: Symbol, requests: Vec<Outbound>) -> Vec<LiveResult> {
    let signer = signer(&link);
    let mut results = Vec::with_capacity(requests.len());
    let mut learned: HashMap<u64, LiveResult> = HashMap::new();
    for request in requests {
        if let Outbound::Cancel(order) | Outbound::Query(order) = &request
            && let Some(known) = learned.remove(&order.id)
        {
            results.push(known);
            continue;
        }
        let Some(permit) = link.breaker.admit(Instant::now()) else {
            results.extend(refused(&request));
            continue;
        };
        let answers = match request {
            Outbound::Place(order) => vec![place(&link, &symbol, &order, &signer).await],
            Outbound::Cancel(order) if order.venue_list.is_some() => {
                super::live_list::cancel(&link, &symbol, &order, &signer).await
            }
            Outbound::Cancel(order) => vec![cancel(&link, &symbol, &order, &signer).await],
            Outbound::Query(order) if order.venue_list.is_some() => {
                super::live_list::query(&link, &symbol, &order, &signer).await
            }
            Outbound::Query(order) => vec![query(&link, &symbol, &order, &signer).await],
            Outbound::PlaceList { take_profit, stop_loss } => {
                super::live_list::place(&link, &symbol, &take_profit, &stop_loss, &signer).await
            }
        };
        let first = answers.first();
        let outcome = match first.map(|r| (&r.venue_error, r.order_answered)) {
            _ if first.is_some_and(|r| r.refused) => Outcome::Unsent,
            Some((Some(why), _)) => Outcome::Failed(why),
            Some((None, true)) => Outcome::Answered,
            _ => Outcome::Reached,
        };
        link.breaker.record(permit, outcome, Instant::now());
        let mut answers = answers.into_iter();
        results.extend(answers.next());
        for other in answers {
            learned.insert(other.order_id, other);
        }
    }
    results.extend(learned.into_values());
    results
}

/// What a request the breaker kept back achieved: nothing was sent.
fn refused(request: &Outbound) -> Vec<LiveResult> {
    let why = "not sent: the account's circuit breaker is open";
    let rejected = |id: u64| LiveResult::report(id, ExecOutcome::Rejected(why.to_owned()));
    let results = match request {
        Outbound::Place(order) => vec![rejected(order.id)],
        Outbound::PlaceList { take_profit, stop_loss } => {
            vec![rejected(take_profit.id), rejected(stop_loss.id)]
        }
        Outbound::Cancel(order) => {
            vec![LiveResult { cancel_failed: true, ..LiveResult::new(order.id) }]
        }
        Outbound::Query(order) => vec![LiveResult::new(order.id)],
    };
    results.into_iter().map(|r| LiveResult { refused: true, ..r }).collect()
}

/// A signer the caller owns.
pub type BoxSigner =
    Box<dyn Fn(String) -> BoxFuture<'static, Result<(String, String), String>> + Send + Sync>;

fn signer(link: &LiveLink) -> BoxSigner {
    vault_signer(&link.vault, link.user_id, link.credential_id)
}

/// Signs with the vault for `user_id`'s exchange account `credential_id`.
pub fn vault_signer(vault: &VaultAddress, user_id: u64, credential_id: u64) -> BoxSigner {
    let vault = vault.clone();
    Box::new(move |payload: String| {
        let vault = vault.get();
        Box::pin(async move {
            let vault = vault.ok_or_else(|| "the vault is restarting".to_owned())?;
            let sign = Sign { user_id, credential_id, payload };
            match ask(&vault, sign, SIGN_DEADLINE, "vault").await {
                Ok(Ok(signed)) => Ok((signed.api_key, signed.signature)),
                Ok(Err(err)) => Err(err.to_string()),
                Err(err) => Err(err.to_string()),
            }
        })
    })
}

/// [`signer`], shareable: what an account's stream signs its subscriptions with.
pub(crate) fn owned_signer(link: &LiveLink) -> keel_venues::account::OwnedSigner {
    Arc::from(signer(link))
}

async fn place(link: &LiveLink, symbol: &Symbol, order: &Order, signer: &BoxSigner) -> LiveResult {
    // A refusal for the timestamp has already been measured for and retried once by the router.
    match link.router.place(symbol, order, signer.as_ref()).await {
        Ok(venue) => LiveResult {
            order_answered: true,
            ..LiveResult::report(order.id, venue_outcome(symbol, venue))
        },
        Err(err) if err.kind == RouteErrorKind::UnknownOutcome => LiveResult {
            venue_error: Some(err.to_string()),
            ..LiveResult::report(order.id, ExecOutcome::Unknown(err.to_string()))
        },
        Err(err) => not_placed(order.id, &err),
    }
}

/// A place that did not go through and changed nothing at the venue: the order is rejected. Only
/// a request the venue did not take (unreachable, a back-off it asked for) counts towards the
/// breaker; one Keel held back itself is marked refused.
pub(super) fn not_placed(order_id: u64, err: &RouteError) -> LiveResult {
    LiveResult {
        venue_error: (err.kind == RouteErrorKind::NotSent).then(|| err.to_string()),
        refused: err.kind == RouteErrorKind::Throttled,
        ..LiveResult::report(order_id, ExecOutcome::Rejected(err.to_string()))
    }
}

async fn cancel(link: &LiveLink, symbol: &Symbol, order: &Order, signer: &BoxSigner) -> LiveResult {
    match link.router.cancel(symbol, &order.client_order_id, signer.as_ref()).await {
        Ok(venue) => LiveResult {
            order_answered: true,
            ..LiveResult::report(order.id, venue_outcome(symbol, venue))
        },
        // Not open there (filled, or never arrived): ask what it is.
        Err(err) if matches!(err.kind, RouteErrorKind::NotOpen | RouteErrorKind::NoSuchOrder) => {
            closed_or_failed(query(link, symbol, order, signer).await, &err.to_string())
        }
        Err(err) => {
            tracing::warn!(order_id = order.id, error = %err, "cancel did not go through");
            LiveResult {
                cancel_failed: true,
                venue_error: Some(err.to_string()),
                ..LiveResult::new(order.id)
            }
        }
    }
}

/// A cancel the venue refused as "not open" counts as closed only once a query shows the order
/// final (or never received); a query that fails, or finds the order still open, leaves the
/// cancel failed, so it is asked again.
pub(super) fn closed_or_failed(mut result: LiveResult, refusal: &str) -> LiveResult {
    let open = match result.report.as_ref().map(|r| &r.outcome) {
        Some(ExecOutcome::Venue { status, .. }) => {
            matches!(status.as_str(), "NEW" | "PARTIALLY_FILLED" | "PENDING_NEW")
        }
        Some(ExecOutcome::NotFound) => false,
        _ => true,
    };
    if open {
        result.cancel_failed = true;
        if result.venue_error.is_none() && result.report.is_none() {
            result.venue_error = Some(refusal.to_owned());
        }
    }
    result
}

pub(super) async fn query(
    link: &LiveLink,
    symbol: &Symbol,
    order: &Order,
    signer: &BoxSigner,
) -> LiveResult {
    match link.router.query(symbol, &order.client_order_id, signer.as_ref()).await {
        Ok(venue) => LiveResult::report(order.id, venue_outcome(symbol, venue)),
        // The caller decides whether it is too soon to believe (see
        // [`LiveLink::not_found_grace`]).
        Err(err) if err.kind == RouteErrorKind::NoSuchOrder => {
            LiveResult::report(order.id, ExecOutcome::NotFound)
        }
        Err(err) => LiveResult { venue_error: Some(err.to_string()), ..LiveResult::new(order.id) },
    }
}

pub(crate) fn venue_outcome(symbol: &Symbol, venue: OrderReport) -> ExecOutcome {
    let fills = venue
        .fills
        .into_iter()
        .map(|f| VenueFillReport {
            price: f.price,
            qty: f.qty,
            // An execution with no commission asset was charged nothing.
            commission: Some(Commission {
                charged_to: Commission::classify(symbol.as_str(), &f.fee_asset),
                asset: f.fee_asset,
                amount: f.fee,
                quote_value_estimated: false,
            }),
        })
        .collect();
    ExecOutcome::Venue {
        status: venue.status,
        executed_qty: venue.executed_qty,
        cum_quote: venue.cum_quote,
        fills,
        ts: keel_venues::now_us() / 1000,
    }
}

/// Longest a bot's start waits for the venue to set its leverage and margin type.
pub const PREPARE_DEADLINE: Duration = Duration::from_secs(15);

/// What setting a derivatives bot's leverage and margin type at its venue returns.
pub type Prepare = BoxFuture<'static, Result<(), keel_venues::routing::RouteError>>;

/// The request that sets `record`'s leverage and margin type at its venue
/// ([`OrderRouter::prepare`], signed by the vault), when it trades live on a venue with leverage;
/// `None` otherwise (spot, paper).
pub fn prepare_request(link: &LiveLink, record: &keel_core::bot::BotRecord) -> Option<Prepare> {
    if !keel_venues::registry::capabilities(record.venue).leverage {
        return None;
    }
    let leverage = record.leverage.unwrap_or(1);
    let margin = record.margin_type.unwrap_or(keel_core::bot::MarginType::Isolated);
    Some(prepare(link.clone(), record.symbol.clone(), leverage, margin))
}

/// Sets `symbol`'s leverage and margin type at the venue, signed by the vault, within
/// [`PREPARE_DEADLINE`].
pub fn prepare(
    link: LiveLink,
    symbol: Symbol,
    leverage: u32,
    margin: keel_core::bot::MarginType,
) -> Prepare {
    Box::pin(async move {
        let signer = signer(&link);
        let asked = link.router.prepare(&symbol, leverage, margin, signer.as_ref());
        match tokio::time::timeout(PREPARE_DEADLINE, asked).await {
            Ok(answer) => answer.map_err(|err| keel_venues::routing::RouteError {
                kind: err.kind,
                message: format!(
                    "the venue refused leverage {leverage}x {} on {symbol}: {}",
                    margin_word(margin),
                    err.message
                ),
            }),
            Err(_) => Err(keel_venues::routing::RouteError {
                kind: RouteErrorKind::UnknownOutcome,
                message: format!(
                    "the venue did not answer setting leverage {leverage}x {} on {symbol} within {} s",
                    margin_word(margin),
                    PREPARE_DEADLINE.as_secs()
                ),
            }),
        }
    })
}

fn margin_word(margin: keel_core::bot::MarginType) -> &'static str {
    match margin {
        keel_core::bot::MarginType::Isolated => "isolated",
        keel_core::bot::MarginType::Cross => "cross",
    }
}
