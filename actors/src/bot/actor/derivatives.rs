//! A live bot on a derivatives venue (registry `leverage`): its leverage and margin type set at
//! the venue before anything else, the venue's view of its position, and funding.
//!
//! - At every start (its owner's, a restart, Keel's own), the symbol's leverage and margin type
//!   are set at the venue ([`OrderRouter::prepare`](keel_venues::routing::OrderRouter::prepare))
//!   before the bot handles anything: the actor waits for the answer. An owner's start has set
//!   them already (the bot supervisor asks first, so a refusal is the start's answer); a restart
//!   the venue refuses fails the bot, with the venue's words as its reason.
//! - The venue's position (pushed by the account's stream, read with
//!   [`positions`](keel_venues::routing::OrderRouter::positions)) is kept beside the bot's own
//!   book, shown by `GET /bots/{id}/position` and journaled as `venue_position` when it changes.
//! - After a start and after every reconnection of the account's stream, once every open order
//!   has been reconciled, the venue's positions are read: a quantity that differs from the bot's
//!   (liquidated while Keel was down) is adopted, with a warning in the journal. Only a bot that
//!   is alone on its symbol in its account adopts: a shared position is not one bot's.
//! - A funding payment is booked into the bot's P&L once, by the venue's id (the ids booked are
//!   part of the bot's durable state), journaled as `funding`; payments made while nobody
//!   listened are read from the venue after a start and every reconnection.

use actix::prelude::*;

use super::BotActor;
use crate::bot::live::{prepare, vault_signer};
use keel_core::bot::MarginType;
use keel_core::engine::{BotEventKind, VenuePositionView};
use keel_venues::routing::{FundingPayment, VenuePosition};

/// What a derivatives bot knows of its venue position.
#[derive(Debug, Default)]
pub(super) struct VenueBook {
    /// The venue's view of the position, as last heard.
    pub(super) position: Option<VenuePositionView>,
    /// Positions are to be read and compared once the open orders are reconciled.
    check_due: bool,
    /// A read of positions is under way.
    checking: bool,
    /// A read of funding payments is under way.
    catching_up: bool,
}

/// The seam's position as the API shows it.
pub(super) fn view(position: VenuePosition) -> VenuePositionView {
    VenuePositionView {
        symbol: position.symbol,
        qty: position.qty,
        entry_price: position.entry_price,
        mark_price: position.mark_price,
        liquidation_price: position.liquidation_price,
        unrealized_pnl: position.unrealized_pnl,
        leverage: position.leverage,
        margin_type: position.margin_type,
        updated_ms: position.updated_ms,
    }
}

fn now_ms() -> u64 {
    keel_venues::now_us() / 1000
}

impl BotActor {
    /// Whether this is a live bot on a venue with leverage.
    pub(super) fn is_derivatives(&self) -> bool {
        self.args
            .live
            .as_ref()
            .is_some_and(|link| keel_venues::registry::capabilities(link.router.venue()).leverage)
    }

    /// At start, before anything else: funding counts from now on a first run, and the
    /// leverage and margin type are set at the venue (unless the start just did) while the
    /// actor waits. Then missed funding is read, and positions once orders are reconciled.
    pub(super) fn start_derivatives(&mut self, ctx: &mut Context<Self>) {
        if !self.is_derivatives() {
            return;
        }
        self.args.engine.start_funding_clock(now_ms());
        self.venue_book.check_due = true;
        if !self.args.prepared
            && let Some(link) = self.args.live.clone()
        {
            let (leverage, margin) = self.args.leverage.unwrap_or((1, MarginType::Isolated));
            let asked = prepare(link, self.args.symbol.clone(), leverage, margin);
            ctx.wait(asked.into_actor(self).map(|answer, act, ctx| {
                if let Err(err) = answer {
                    tracing::warn!(bot_id = act.id(), error = %err, "leverage not set; the bot stops");
                    let line =
                        BotEventKind::Log { level: "error".into(), message: err.message.clone() };
                    act.args.engine.log(now_ms(), line, &mut act.fx);
                    act.persist(ctx, None);
                    act.args.lifeline.crashed(err.message);
                    ctx.stop();
                }
            }));
        }
        self.catch_up_funding(ctx);
    }

    /// The account's stream is back: what it did not push is read again.
    pub(super) fn derivatives_stream_up(&mut self, ctx: &mut Context<Self>) {
        if !self.is_derivatives() {
            return;
        }
        self.venue_book.check_due = true;
        self.catch_up_funding(ctx);
    }

    /// Every open order has been reconciled with the venue: compare positions now if due.
    pub(super) fn orders_reconciled(&mut self, ctx: &mut Context<Self>) {
        self.report_reconciled();
        if self.venue_book.check_due && !self.venue_book.checking && self.in_flight.is_empty() {
            self.check_positions(ctx);
        }
    }

    /// Reads the venue's positions, keeps this symbol's, and adopts its quantity when it
    /// differs from the bot's own book.
    fn check_positions(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = self.args.live.clone() else { return };
        self.venue_book.check_due = false;
        self.venue_book.checking = true;
        let asked = async move {
            let signer = vault_signer(&link.vault, link.user_id, link.credential_id);
            link.router.positions(signer.as_ref()).await
        };
        ctx.spawn(asked.into_actor(self).map(|answer, act, ctx| {
            act.venue_book.checking = false;
            let positions = match answer {
                Ok(positions) => positions,
                Err(err) => {
                    tracing::warn!(bot_id = act.id(), error = %err, "venue positions not read; asked again after the next poll");
                    act.venue_book.check_due = true;
                    return;
                }
            };
            let symbol = act.args.symbol.as_str().to_owned();
            let found = positions.into_iter().find(|p| p.symbol.eq_ignore_ascii_case(&symbol));
            let venue = found.map_or_else(|| flat(&symbol), view);
            act.reconcile_position(venue, ctx);
        }));
    }

    fn reconcile_position(&mut self, venue: VenuePositionView, ctx: &mut Context<Self>) {
        let (qty, entry) = (venue.qty, venue.entry_price);
        self.note_venue_position(venue);
        if qty != self.args.engine.position().qty {
            if !self.in_flight.is_empty() {
                // An order's answer may still change the bot's book: compare after the next
                // poll.
                self.venue_book.check_due = true;
            } else if self.alone_on_symbol() {
                tracing::warn!(bot_id = self.id(), %qty, own = %self.args.engine.position().qty, "adopting the venue's position");
                self.args.engine.adopt_venue_position(qty, entry, now_ms(), &mut self.fx);
            } else {
                let message = format!(
                    "the venue's position in {} is {qty}, the bot's {}: other bots of this \
                     account trade the symbol too, so the bot keeps its own",
                    self.args.symbol,
                    self.args.engine.position().qty
                );
                self.args.engine.log(
                    now_ms(),
                    BotEventKind::Log { level: "warn".into(), message },
                    &mut self.fx,
                );
            }
        }
        if !self.fx.is_empty() {
            self.persist(ctx, None);
        }
    }

    fn alone_on_symbol(&self) -> bool {
        let Some(link) = &self.args.live else { return true };
        link.accounts
            .get(link.router.venue(), link.credential_id)
            .is_none_or(|account| account.bots_trading(self.args.symbol.as_str()) <= 1)
    }

    /// Keeps the venue's view of the position and journals it when it changed (nothing is
    /// persisted here).
    fn note_venue_position(&mut self, venue: VenuePositionView) {
        if self.venue_book.position.as_ref().is_some_and(|known| !known.differs(&venue)) {
            return;
        }
        self.venue_book.position = Some(venue.clone());
        self.args.engine.log(now_ms(), BotEventKind::VenuePosition(venue), &mut self.fx);
    }

    /// The account's stream pushed the symbol's position.
    pub(super) fn on_venue_position(&mut self, position: VenuePosition, ctx: &mut Context<Self>) {
        if !self.is_derivatives() {
            return;
        }
        self.note_venue_position(view(position));
        if !self.fx.is_empty() {
            self.persist(ctx, None);
        }
    }

    /// The account's stream pushed a funding payment.
    pub(super) fn on_funding(&mut self, payment: FundingPayment, ctx: &mut Context<Self>) {
        if self.is_derivatives() && self.book_funding(&payment) {
            self.persist(ctx, None);
        }
    }

    /// Books one payment on the bot's symbol, once by id; answers whether it was booked now.
    fn book_funding(&mut self, payment: &FundingPayment) -> bool {
        if !payment.symbol.eq_ignore_ascii_case(self.args.symbol.as_str())
            || payment.time_ms < self.args.engine.funding_ledger().since_ms
        {
            return false;
        }
        let booked = self.args.engine.apply_venue_funding(
            &payment.id,
            payment.amount,
            &payment.asset,
            payment.time_ms,
            &mut self.fx,
        );
        if booked {
            metrics::counter!("keel_funding_booked_total").increment(1);
        }
        booked
    }

    /// Reads the payments made since the last one booked (or the bot's first live run) and
    /// books those not booked yet.
    pub(super) fn catch_up_funding(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = self.args.live.clone() else { return };
        if self.venue_book.catching_up {
            return;
        }
        self.venue_book.catching_up = true;
        let since = self.args.engine.funding_ledger().since_ms;
        let symbol = self.args.symbol.clone();
        let asked = async move {
            let signer = vault_signer(&link.vault, link.user_id, link.credential_id);
            link.router.funding(&symbol, since, signer.as_ref()).await
        };
        ctx.spawn(asked.into_actor(self).map(|answer, act, ctx| {
            act.venue_book.catching_up = false;
            match answer {
                Ok(payments) => {
                    let mut booked = false;
                    for payment in &payments {
                        booked |= act.book_funding(payment);
                    }
                    if booked {
                        act.persist(ctx, None);
                    }
                }
                Err(err) => {
                    tracing::warn!(bot_id = act.id(), error = %err, "funding payments not read; read again on the next reconnection")
                }
            }
        }));
    }
}

/// No position at the venue in `symbol`.
fn flat(symbol: &str) -> VenuePositionView {
    VenuePositionView {
        symbol: symbol.to_owned(),
        qty: rust_decimal::Decimal::ZERO,
        entry_price: rust_decimal::Decimal::ZERO,
        mark_price: None,
        liquidation_price: None,
        unrealized_pnl: rust_decimal::Decimal::ZERO,
        leverage: None,
        margin_type: None,
        updated_ms: 0,
    }
}
