//! Market requests (`GET /markets/…`, `GET /venues`, a bot's instrument rules): answered from
//! the per-symbol state, subscribing on demand and waiting a while for the first data; a
//! symbol stays warm for a while after its last request.

use std::time::Instant;

use actix::prelude::*;

use super::messages::{
    Connectivity, FeedError, GetCandles, GetInstrument, GetTicker, GetVenueStatus, InstrumentError,
    Ticker, VenueStatus,
};
use super::state::SymbolState;
use super::{FeedActor, Waiter, Waiting};
use crate::mailbox::Ask;
use keel_core::market::Symbol;

impl FeedActor {
    pub(super) fn answer_waiters(&mut self, force_timeout: bool) {
        let now = Instant::now();
        let waiters = std::mem::take(&mut self.waiters);
        for waiter in waiters {
            let ready = self.symbols.get(&waiter.symbol).is_some_and(SymbolState::has_data);
            if ready {
                self.answer(waiter);
            } else if force_timeout || now >= waiter.until {
                let err =
                    FeedError::NoData { venue: self.venue(), symbol: waiter.symbol.to_string() };
                match waiter.what {
                    Waiting::Ticker(r) => r.send(Err(err)),
                    Waiting::Candles(_, _, r) => r.send(Err(err)),
                }
            } else {
                self.waiters.push(waiter);
            }
        }
    }

    fn answer(&self, waiter: Waiter) {
        let state = self.symbols.get(&waiter.symbol);
        match waiter.what {
            Waiting::Ticker(replier) => replier.send(Ok(Ticker {
                venue: self.venue(),
                symbol: waiter.symbol.clone(),
                last_trade: state.and_then(|s| s.last_trade.clone()),
                quote: state.and_then(|s| s.quote.clone()),
            })),
            Waiting::Candles(interval, limit, replier) => {
                replier.send(Ok(state.map(|s| s.candles(interval, limit)).unwrap_or_default()));
            }
        }
    }

    fn request(&mut self, symbol: Symbol, what: Waiting) {
        if let Err(err) = self.check_symbol(&symbol) {
            match what {
                Waiting::Ticker(r) => r.send(Err(err)),
                Waiting::Candles(_, _, r) => r.send(Err(err)),
            }
            return;
        }
        self.warm(&symbol);
        self.reconcile();
        let waiter = Waiter { symbol, until: Instant::now() + self.config.first_data_wait, what };
        if self.symbols.get(&waiter.symbol).is_some_and(SymbolState::has_data) {
            self.answer(waiter);
        } else {
            self.waiters.push(waiter);
        }
    }

    pub(super) fn expire_warm(&mut self) {
        let now = Instant::now();
        let before = self.warm_until.len();
        self.warm_until.retain(|_, until| *until > now);
        if self.warm_until.len() != before {
            self.reconcile();
        }
        let streams = &self.streams;
        let warm = &self.warm_until;
        self.symbols.retain(|symbol, _| {
            warm.contains_key(symbol) || streams.keys().any(|(s, _)| s == symbol)
        });
    }

    fn status(&self) -> VenueStatus {
        let mut streams: Vec<String> = self
            .streams
            .keys()
            .map(|(symbol, kind)| format!("market:{}:{}:{}", self.venue(), symbol, kind.as_str()))
            .collect();
        streams.sort();
        let links = self.upstream.as_ref().map_or(&[][..], |u| &u.links[..]);
        let up = links.iter().filter(|l| l.connected).count();
        let state = if self.simulator.is_some() || (up > 0 && up == links.len()) {
            Connectivity::Connected
        } else if up > 0 {
            Connectivity::Degraded
        } else {
            Connectivity::Down
        };
        VenueStatus {
            venue: self.venue(),
            state,
            streams,
            last_message_age_ms: self.last_message.map(|t| t.elapsed().as_millis() as u64),
            subscribers: self.streams.values().map(|s| s.subscribers.len()).sum(),
            replay: self.replay.as_ref().map(|r| r.status.clone()),
        }
    }
}

impl Handler<Ask<GetTicker>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetTicker>, _: &mut Context<Self>) {
        let (GetTicker { symbol }, replier) = ask.into_parts();
        self.request(symbol, Waiting::Ticker(replier));
    }
}

impl Handler<Ask<GetCandles>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetCandles>, _: &mut Context<Self>) {
        let (GetCandles { symbol, interval, limit }, replier) = ask.into_parts();
        self.request(symbol, Waiting::Candles(interval, limit, replier));
    }
}

impl Handler<Ask<GetVenueStatus>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetVenueStatus>, _: &mut Context<Self>) {
        ask.reply(self.status());
    }
}

impl Handler<Ask<GetInstrument>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetInstrument>, _: &mut Context<Self>) {
        let (GetInstrument { symbol }, replier) = ask.into_parts();
        let answer = match &self.instruments {
            Some(instruments) => {
                instruments.get(&symbol).cloned().ok_or(InstrumentError::UnknownSymbol)
            }
            None => Err(InstrumentError::Unavailable),
        };
        replier.send(answer);
    }
}
