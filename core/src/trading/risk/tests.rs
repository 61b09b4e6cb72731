//! Every rejection code, and acceptance exactly at each limit.

use super::*;
use crate::trading::margin::FuturesConfig;
use crate::trading::{OrderOrigin, OrderStatus};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn filters() -> InstrumentFilters {
    InstrumentFilters {
        tick_size: d("0.01"),
        step_size: d("0.001"),
        min_qty: d("0.002"),
        max_qty: d("100"),
        min_notional: d("5"),
    }
}

fn open(side: Side, qty: &str, price: &str) -> Order {
    Order {
        id: 99,
        bot_id: 1,
        client_order_id: "keel-1-000099".into(),
        side,
        order_type: OrderType::limit(d(price)),
        qty: d(qty),
        filled_qty: Decimal::ZERO,
        avg_fill_price: Decimal::ZERO,
        status: OrderStatus::Accepted,
        origin: OrderOrigin::Manual,
        tag: 0,
        oco_with: None,
        venue_list: None,
        reason: None,
        created_ts: 0,
        updated_ts: 0,
    }
}

struct Case {
    req: OrderRequest,
    limits: RiskLimits,
    position: Position,
    open: Vec<Order>,
    mark: Option<Decimal>,
    spot: bool,
    headroom: Option<Decimal>,
    user: Option<UserNotional>,
    exposure: Decimal,
    futures: Option<FuturesConfig>,
}

impl Case {
    fn new(req: OrderRequest) -> Self {
        Self {
            req,
            limits: RiskLimits::default(),
            position: Position { qty: d("1"), quote_balance: d("1000"), ..Position::default() },
            open: Vec::new(),
            mark: Some(d("100")),
            spot: true,
            headroom: None,
            user: None,
            exposure: Decimal::ZERO,
            futures: None,
        }
    }

    fn check(&self) -> Result<(), &'static str> {
        let f = filters();
        let ctx = RiskContext {
            filters: &f,
            limits: &self.limits,
            position: &self.position,
            open_orders: &self.open,
            mark_price: self.mark,
            allow_short: !self.spot,
            base_balance_check: self.spot,
            user_exposure_headroom: self.headroom,
            user_notional: self.user,
            exposure: self.exposure,
            futures: self.futures.as_ref(),
        };
        check_order(&self.req, &ctx).map_err(|r| {
            assert!(!r.reason.is_empty());
            r.code
        })
    }
}

fn buy(qty: &str) -> OrderRequest {
    OrderRequest::market(Side::Buy, d(qty))
}

fn sell(qty: &str) -> OrderRequest {
    OrderRequest::market(Side::Sell, d(qty))
}

#[test]
fn every_rule_rejects_with_its_code_and_passes_at_its_boundary() {
    let limits = |f: fn(&mut RiskLimits)| {
        let mut l = RiskLimits::default();
        f(&mut l);
        l
    };
    let cases: Vec<(&str, Case, Result<(), &str>)> = vec![
        ("plain buy", Case::new(buy("1")), Ok(())),
        ("zero", Case::new(buy("0")), Err("QTY_NOT_POSITIVE")),
        ("negative", Case::new(buy("-1")), Err("QTY_NOT_POSITIVE")),
        ("off step", Case::new(buy("0.0025")), Err("QTY_OFF_STEP")),
        ("below min qty", Case::new(buy("0.001")), Err("BELOW_MIN_QTY")),
        (
            "at min qty but tiny notional",
            Case { mark: Some(d("1")), ..Case::new(buy("0.002")) },
            Err("BELOW_MIN_NOTIONAL"),
        ),
        ("above max qty", Case::new(buy("100.001")), Err("ABOVE_MAX_QTY")),
        (
            "off tick",
            Case::new(OrderRequest::limit(Side::Buy, d("1"), d("99.995"))),
            Err("PRICE_OFF_TICK"),
        ),
        ("no price", Case { mark: None, ..Case::new(buy("1")) }, Err("NO_PRICE")),
        (
            "notional at the limit",
            Case {
                limits: limits(|l| l.max_order_notional = Some(d("100"))),
                ..Case::new(buy("1"))
            },
            Ok(()),
        ),
        (
            "notional over",
            Case {
                limits: limits(|l| l.max_order_notional = Some(d("99.99"))),
                ..Case::new(buy("1"))
            },
            Err("MAX_ORDER_NOTIONAL"),
        ),
        (
            "position at the limit",
            Case { limits: limits(|l| l.max_position = Some(d("2"))), ..Case::new(buy("1")) },
            Ok(()),
        ),
        (
            "position over",
            Case { limits: limits(|l| l.max_position = Some(d("1.999"))), ..Case::new(buy("1")) },
            Err("MAX_POSITION"),
        ),
        (
            "open buys count towards the position",
            Case {
                limits: limits(|l| l.max_position = Some(d("2"))),
                open: vec![open(Side::Buy, "0.5", "90")],
                ..Case::new(buy("1"))
            },
            Err("MAX_POSITION"),
        ),
        (
            "reducing is always allowed",
            Case { limits: limits(|l| l.max_position = Some(d("0.5"))), ..Case::new(sell("0.5")) },
            Ok(()),
        ),
        (
            "open orders at the limit",
            Case {
                limits: limits(|l| l.max_open_orders = Some(1)),
                open: vec![open(Side::Buy, "0.1", "90")],
                ..Case::new(buy("1"))
            },
            Err("MAX_OPEN_ORDERS"),
        ),
        ("sell what is held", Case::new(sell("1")), Ok(())),
        ("spot cannot short", Case::new(sell("1.001")), Err("NO_SHORTING")),
        (
            "open sells hold the position",
            Case { open: vec![open(Side::Sell, "0.5", "110")], ..Case::new(sell("0.6")) },
            Err("NO_SHORTING"),
        ),
        ("futures may short", Case { spot: false, ..Case::new(sell("3")) }, Ok(())),
        ("balance covers exactly", Case::new(buy("10")), Ok(())),
        ("balance short", Case::new(buy("10.001")), Err("INSUFFICIENT_BALANCE")),
        (
            "open buys reserve the balance",
            Case { open: vec![open(Side::Buy, "1", "100")], ..Case::new(buy("9.001")) },
            Err("INSUFFICIENT_BALANCE"),
        ),
        (
            "user headroom",
            Case { headroom: Some(d("50")), ..Case::new(buy("1")) },
            Err("USER_EXPOSURE"),
        ),
        (
            "user headroom does not limit exits",
            Case { headroom: Some(d("50")), ..Case::new(sell("1")) },
            Ok(()),
        ),
    ];
    for (name, case, expected) in cases {
        assert_eq!(case.check(), expected, "{name}");
    }
}

#[test]
fn max_notional_counts_the_position_and_open_orders_and_spares_exits() {
    let limits = RiskLimits { max_notional: Some(d("500")), ..RiskLimits::default() };
    // 100 of position and orders already: 4 more at 100 reach exactly 500.
    let mut case = Case { limits, exposure: d("100"), spot: false, ..Case::new(buy("4")) };
    assert_eq!(case.check(), Ok(()));
    case.req = buy("4.01");
    assert_eq!(case.check(), Err("MAX_NOTIONAL"));
    // Reducing the long is never refused for notional.
    case.req = sell("1");
    assert_eq!(case.check(), Ok(()));
}

#[test]
fn leveraged_orders_need_margin_not_the_full_notional() {
    use crate::bot::MarginType;
    let futures = FuturesConfig::new(10, MarginType::Isolated);
    // Flat with 100 quote: 10x leverage opens up to 1,000 of notional, either way.
    let flat = Position { quote_balance: d("100"), ..Position::default() };
    let mut case = Case {
        position: flat,
        spot: false,
        futures: Some(futures.clone()),
        ..Case::new(buy("10"))
    };
    assert_eq!(case.check(), Ok(()));
    case.req = sell("10");
    assert_eq!(case.check(), Ok(()));
    case.req = buy("10.01");
    assert_eq!(case.check(), Err("INSUFFICIENT_MARGIN"));
    // Without leverage the same bot (a short-capable venue) is not checked for margin.
    case.futures = None;
    assert_eq!(case.check(), Ok(()));

    // A 5 long at 100 holds 50 of margin: 50 is left for 5 more; a resting buy of 1 at 100
    // holds 10 of it.
    let long = Position {
        qty: d("5"),
        avg_entry_price: d("100"),
        quote_balance: d("100") - d("500"),
        ..Position::default()
    };
    let mut case = Case {
        position: long,
        spot: false,
        futures: Some(futures),
        open: vec![open(Side::Buy, "1", "100")],
        ..Case::new(buy("4"))
    };
    assert_eq!(case.check(), Ok(()));
    case.req = buy("4.01");
    assert_eq!(case.check(), Err("INSUFFICIENT_MARGIN"));
    // Closing needs no margin; flipping needs margin for the new short only.
    case.req = sell("5");
    assert_eq!(case.check(), Ok(()));
    case.req = sell("9");
    assert_eq!(case.check(), Ok(()));
    // An unrealised loss eats into what is available: at 95 the long is 25 down.
    case.mark = Some(d("95"));
    case.req = sell("9.5");
    assert_eq!(case.check(), Err("INSUFFICIENT_MARGIN"));
}

#[test]
fn limits_must_be_positive_and_sane() {
    let bad = RiskLimits {
        max_order_notional: Some(d("0")),
        max_position: Some(d("-1")),
        max_open_orders: Some(0),
        max_daily_loss: Some(d("1e13")),
        max_leverage: Some(126),
        max_notional: Some(d("0")),
    };
    let fields: Vec<_> = bad.validate().into_iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        [
            "risk.max_order_notional",
            "risk.max_position",
            "risk.max_daily_loss",
            "risk.max_notional",
            "risk.max_open_orders",
            "risk.max_leverage"
        ]
    );
    assert!(RiskLimits::default().validate().is_empty());
}

#[test]
fn the_daily_loss_counts_from_the_start_of_the_utc_day() {
    let day = 86_400_000u64;
    let mut loss = DailyLoss::new();
    let limits = RiskLimits { max_daily_loss: Some(d("50")), ..RiskLimits::default() };
    let mut p = Position { quote_balance: d("1000"), ..Position::default() };
    p.apply(Side::Buy, d("10"), d("100"), d("0"));
    // Yesterday's loss does not count today.
    assert_eq!(loss.observe(3 * day - 1, &p, Some(d("90"))), d("0"));
    assert_eq!(loss.observe(3 * day + 5, &p, Some(d("90"))), d("0"));
    assert_eq!(loss.observe(3 * day + 6, &p, Some(d("85"))), d("-50"));
    assert!(loss.breached(&limits));
    assert!(!loss.breached(&RiskLimits::default()));
}

#[test]
fn the_owners_max_notional_counts_every_bot_and_spares_exits() {
    // The other bots hold 300 of a 1000 limit; this one 100: 6 more at 100 reach exactly 1000.
    let user = Some(UserNotional { limit: d("1000"), others: d("300") });
    let mut case = Case { user, exposure: d("100"), spot: false, ..Case::new(buy("6")) };
    assert_eq!(case.check(), Ok(()));
    case.req = buy("6.01");
    assert_eq!(case.check(), Err("MAX_USER_NOTIONAL"));
    // The bot's own limit is reported first when both are broken.
    case.limits.max_notional = Some(d("500"));
    assert_eq!(case.check(), Err("MAX_NOTIONAL"));
    case.limits.max_notional = None;
    // Reducing the long is never refused for notional, even past the limit.
    case.user = Some(UserNotional { limit: d("1000"), others: d("2000") });
    case.req = sell("1");
    assert_eq!(case.check(), Ok(()));
    case.req = buy("1");
    assert_eq!(case.check(), Err("MAX_USER_NOTIONAL"));
}
