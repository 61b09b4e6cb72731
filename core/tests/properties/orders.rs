//! The engine's order manager under random owner commands and market events (paper execution,
//! with or without a bracket, spot or with shorting allowed).

use std::collections::BTreeMap;

use keel_core::bot::Bracket;
use keel_core::engine::{BotEngine, BotEventKind, BotState, Effects, EngineConfig};
use keel_core::market::{MarketEvent, Side};
use keel_core::strategy::{Intent, Strategy as BotStrategy, StrategyContext};
use keel_core::trading::paper::PaperConfig;
use keel_core::trading::risk::RiskLimits;
use keel_core::trading::{Fill, Order, OrderRequest, OrderType, Position};
use proptest::prelude::*;
use rust_decimal::Decimal;

use crate::{Tick, events, filters, replay, tick};

/// A strategy that never asks for anything: the owner's commands are all that happen.
#[derive(Debug)]
struct Idle;

impl BotStrategy for Idle {
    fn on_event(&mut self, _: &MarketEvent, _: &StrategyContext<'_>, _: &mut Vec<Intent>) {}
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn restore(&mut self, _: serde_json::Value) -> Result<(), serde_json::Error> {
        Ok(())
    }
}

/// What happens next to the bot.
#[derive(Debug, Clone)]
enum Command {
    /// The next market event.
    Market,
    /// The owner places an order: `kind` 0 market, 1 limit, 2 stop; `qty` in thousandths;
    /// `offset` in cents from the last price (limits and stops).
    Place {
        buy: bool,
        kind: u8,
        qty: i64,
        offset: i64,
    },
    /// The owner cancels the `n`th open order (modulo how many are open).
    Cancel(usize),
    CancelAll,
    ClosePosition,
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        6 => Just(Command::Market),
        3 => (any::<bool>(), 0u8..3, 1i64..=2_000, -200i64..=200)
            .prop_map(|(buy, kind, qty, offset)| Command::Place { buy, kind, qty, offset }),
        1 => any::<usize>().prop_map(Command::Cancel),
        1 => Just(Command::CancelAll),
        1 => Just(Command::ClosePosition),
    ]
}

fn bracket() -> impl Strategy<Value = Option<Bracket>> {
    prop::option::of((1i64..=300, 1i64..=300).prop_map(|(tp, sl)| Bracket {
        take_profit_pct: Decimal::new(tp, 2),
        stop_loss_pct: Decimal::new(sl, 2),
    }))
}

/// Everything the engine reported, in order.
#[derive(Default)]
struct Reported {
    versions: Vec<Order>,
    fills: Vec<Fill>,
    event_ids: Vec<u64>,
    positions: Vec<Position>,
}

impl Reported {
    fn take(&mut self, fx: &mut Effects) {
        self.versions.append(&mut fx.orders);
        self.fills.append(&mut fx.fills);
        for event in fx.events.drain(..) {
            self.event_ids.push(event.id);
            if let BotEventKind::Position(p) = event.kind {
                self.positions.push(p);
            }
        }
        fx.clear();
    }
}

/// Runs `commands` against a fresh paper engine; returns it and what it reported.
fn session(
    ticks: &[Tick],
    commands: &[Command],
    bracket: Option<Bracket>,
    allow_short: bool,
) -> (BotEngine, Reported) {
    let config = EngineConfig {
        bot_id: 7,
        filters: filters(),
        risk: RiskLimits::default(),
        bracket,
        paper: PaperConfig { fee_bps: Decimal::from(10), slippage_bps: Decimal::from(5) },
        allow_short,
        futures: None,
        live: false,
    };
    let state = BotState {
        position: Position { quote_balance: Decimal::from(1_000_000), ..Position::default() },
        ..BotState::default()
    };
    let mut engine = BotEngine::new(config, state, Box::new(Idle), Vec::new());
    let mut market = events(ticks).into_iter().cycle();
    let mut fx = Effects::default();
    let mut seen = Reported::default();
    let mut last = Decimal::ONE_HUNDRED;
    for command in commands {
        match command {
            Command::Market => {
                let event = market.next().unwrap();
                engine.on_market(&event, &mut fx);
                last = engine.mark_price().unwrap_or(last);
            }
            &Command::Place { buy, kind, qty, offset } => {
                let side = if buy { Side::Buy } else { Side::Sell };
                let price = filters().round_price(last + Decimal::new(offset, 2));
                let order_type = match kind {
                    0 => OrderType::Market,
                    1 => OrderType::limit(price),
                    _ => OrderType::Stop { stop_price: price },
                };
                let req = OrderRequest { side, qty: Decimal::new(qty, 3), order_type, tag: 0 };
                let _ = engine.place_manual(req, &mut fx);
            }
            Command::Cancel(n) => {
                let open = engine.open_orders();
                if !open.is_empty() {
                    let id = open[n % open.len()].id;
                    let canceled = engine.cancel(id, "owner", &mut fx);
                    assert!(canceled.is_ok(), "a listed open order cancels: {canceled:?}");
                }
            }
            Command::CancelAll => {
                engine.cancel_all("owner", &mut fx);
            }
            Command::ClosePosition => {
                let _ = engine.close_position(&mut fx);
            }
        }
        seen.take(&mut fx);
    }
    (engine, seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No version of an order follows a final one; its filled quantity never shrinks, never
    /// passes its quantity, and ends as the sum of its fills, at their volume-weighted price.
    #[test]
    fn an_order_never_leaves_a_final_status_and_never_overfills(
        ticks in prop::collection::vec(tick(), 20..80),
        commands in prop::collection::vec(command(), 1..150),
        bracket in bracket(),
        allow_short in any::<bool>(),
    ) {
        let (_, seen) = session(&ticks, &commands, bracket, allow_short);
        let mut last: BTreeMap<u64, &Order> = BTreeMap::new();
        for v in &seen.versions {
            if let Some(before) = last.get(&v.id) {
                prop_assert!(!before.status.is_final(), "order {} changed after {:?}: {v:?}", v.id, before.status);
                prop_assert!(v.filled_qty >= before.filled_qty, "order {} un-filled", v.id);
            }
            prop_assert!(v.filled_qty <= v.qty, "order {} over-filled: {v:?}", v.id);
            last.insert(v.id, v);
        }
        for (id, order) in &last {
            let fills: Vec<&Fill> = seen.fills.iter().filter(|f| f.order_id == *id).collect();
            let qty: Decimal = fills.iter().map(|f| f.qty).sum();
            let value: Decimal = fills.iter().map(|f| f.qty * f.price).sum();
            prop_assert_eq!(order.filled_qty, qty, "order {}", id);
            prop_assert!((order.avg_fill_price * order.filled_qty - value).abs() <= Decimal::new(1, 12));
            prop_assert!(fills.iter().all(|f| f.side == order.side));
        }
    }

    /// The open list is exactly the orders whose latest version is open; the position is the
    /// fills replayed (and each journal position line the replay at that point); fill and
    /// journal ids count up from 1 without gaps; two legs of one bracket never both fill.
    #[test]
    fn open_orders_position_and_journal_agree_with_what_was_reported(
        ticks in prop::collection::vec(tick(), 20..80),
        commands in prop::collection::vec(command(), 1..150),
        bracket in bracket(),
        allow_short in any::<bool>(),
    ) {
        let (engine, seen) = session(&ticks, &commands, bracket, allow_short);
        let mut last: BTreeMap<u64, &Order> = BTreeMap::new();
        for v in &seen.versions {
            last.insert(v.id, v);
        }
        let open_by_versions: Vec<u64> =
            last.values().filter(|o| o.status.is_open()).map(|o| o.id).collect();
        let mut listed: Vec<u64> = engine.open_orders().iter().map(|o| o.id).collect();
        listed.sort_unstable();
        prop_assert_eq!(listed, open_by_versions);
        prop_assert!(engine.open_orders().iter().all(|o| o.status.is_open()));

        let start = Decimal::from(1_000_000);
        prop_assert_eq!(engine.position(), &replay(start, &seen.fills));
        for (i, p) in seen.positions.iter().enumerate() {
            prop_assert_eq!(p, &replay(start, &seen.fills[..=i]));
        }
        prop_assert!(seen.fills.iter().enumerate().all(|(i, f)| f.id == i as u64 + 1));
        prop_assert!(seen.event_ids.iter().enumerate().all(|(i, id)| *id == i as u64 + 1));
        for order in last.values() {
            if let Some(other) = order.oco_with {
                let both = order.status == keel_core::trading::OrderStatus::Filled
                    && last[&other].status == keel_core::trading::OrderStatus::Filled;
                prop_assert!(!both, "bracket legs {} and {other} both filled", order.id);
            }
        }
    }

    /// A spot bot (no shorting) never holds a negative quantity. It caught three ways it once
    /// did (the minimal cases are in `core/tests/proptest-regressions/orders.txt`):
    /// - close-position sold the whole position while another sell still rested, which then
    ///   filled (close-position now cancels the open orders on its side first);
    /// - a take-profit leg filled in part left its stop-loss leg at the full entry size (a leg
    ///   filled in part now shrinks its partner);
    /// - an entry filled in part, closed, then completing after a second entry got its bracket,
    ///   was bracketed in full (a bracket now covers only what no other exit takes out).
    #[test]
    fn a_spot_position_never_goes_short(
        ticks in prop::collection::vec(tick(), 20..80),
        commands in prop::collection::vec(command(), 1..150),
        bracket in bracket(),
    ) {
        let (_, seen) = session(&ticks, &commands, bracket, false);
        for p in &seen.positions {
            prop_assert!(p.qty >= Decimal::ZERO, "short {} in spot", p.qty);
        }
    }
}
