//! keel-strategy: write a Keel strategy in Rust and compile it to a WebAssembly module that
//! speaks the raw ABI of docs/STRATEGY_ABI.md.
//!
//! Implement [`Strategy`] and name the type in [`export_strategy!`]; the macro writes the
//! module's exports (`keel_abi_version`, `keel_alloc`, `keel_params_schema`, `keel_init`,
//! `keel_on_trade`, `keel_on_event`, `keel_save`, `keel_restore`). [`Host`] wraps the `keel`
//! imports: the bot's context, orders, cancels, logs, indicator series, timers and candles.
//!
//! Everything a strategy sees comes from the host, in event time: there is no clock, no
//! randomness, no file or network, so a backtest and a live bot make the same decisions.

pub use rust_decimal::Decimal;
pub use serde_json;

use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;

/// The ABI version this SDK speaks.
pub const ABI_VERSION: i32 = 1;

#[doc(hidden)]
pub mod raw {
    #[link(wasm_import_module = "keel")]
    unsafe extern "C" {
        pub fn context(ptr: *mut u8, cap: i32) -> i32;
        pub fn place(
            side: i32,
            kind: i32,
            qty_m: i64,
            qty_s: i32,
            price_m: i64,
            price_s: i32,
            tag: i32,
        ) -> i32;
        pub fn place_order(ptr: *const u8, len: i32) -> i32;
        pub fn cancel(id: i64);
        pub fn cancel_all();
        pub fn log(level: i32, ptr: *const u8, len: i32);
        pub fn series(ptr: *const u8, len: i32, pane: i32, style: i32, min: f64, max: f64) -> i32;
        pub fn publish(index: i32, value: f64);
        pub fn publish_decimal(index: i32, m: i64, s: i32);
        pub fn set_timer(at_ms: i64);
        pub fn candles(secs: i32);
        pub fn save_state(ptr: *const u8, len: i32);
        pub fn fail(ptr: *const u8, len: i32);
    }
}

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

/// A trade on the bot's symbol.
#[derive(Debug, Clone, Copy)]
pub struct Trade {
    /// Event time, ms since the epoch.
    pub ts: u64,
    /// Price.
    pub price: Decimal,
    /// Quantity.
    pub qty: Decimal,
    /// The taker's side.
    pub side: Side,
}

/// The bot's position and balances.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Position {
    /// Base quantity held (negative when short).
    pub qty: Decimal,
    /// Average entry price.
    pub avg_entry_price: Decimal,
    /// Realised P&L.
    pub realized_pnl: Decimal,
    /// Fees paid.
    pub fees: Decimal,
    /// Quote balance.
    pub quote_balance: Decimal,
}

/// One of the strategy's open orders.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenOrder {
    /// Order id.
    pub id: u64,
    /// Buy or sell.
    pub side: Side,
    /// Limit price, if a limit order.
    pub price: Option<Decimal>,
    /// Quantity still to fill.
    pub remaining: Decimal,
    /// The tag given at placing.
    pub tag: u32,
}

/// The instrument's rules.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filters {
    /// Price increment.
    pub tick_size: Decimal,
    /// Quantity increment.
    pub step_size: Decimal,
    /// Smallest quantity.
    pub min_qty: Decimal,
    /// Largest quantity (0: none).
    pub max_qty: Decimal,
    /// Smallest price × quantity.
    pub min_notional: Decimal,
}

impl Filters {
    /// `qty` rounded down to a whole number of steps.
    pub fn floor_qty(&self, qty: Decimal) -> Decimal {
        if self.step_size.is_zero() {
            return qty;
        }
        (qty / self.step_size).floor() * self.step_size
    }

    /// Whether `qty` is a whole number of steps.
    pub fn qty_on_step(&self, qty: Decimal) -> bool {
        self.step_size.is_zero() || (qty % self.step_size).is_zero()
    }

    /// `qty` floored to the step, if it then meets the minimum quantity and notional at `price`.
    pub fn sized(&self, qty: Decimal, price: Decimal) -> Option<Decimal> {
        let qty = self.floor_qty(qty);
        let notional = qty.checked_mul(price)?;
        (qty > Decimal::ZERO && qty >= self.min_qty && notional >= self.min_notional).then_some(qty)
    }
}

/// What the strategy may read about its bot now.
#[derive(Debug, Clone, Deserialize)]
pub struct Context {
    /// Event time of the current call.
    pub now_ms: u64,
    /// Position and balances.
    pub position: Position,
    /// The strategy's open orders.
    pub open_orders: Vec<OpenOrder>,
    /// The instrument's rules.
    pub filters: Filters,
}

/// An order to place.
#[derive(Debug, Clone, Copy)]
pub enum Order {
    /// At market.
    Market,
    /// At this price or better.
    Limit(Decimal),
    /// A market order armed until the market trades through this price.
    Stop(Decimal),
}

/// Where a series is drawn.
#[derive(Debug, Clone, Copy)]
pub enum Pane {
    /// Over the price chart.
    Price = 0,
    /// In its own panel.
    Own = 1,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// A time series.
    Line = 0,
    /// A horizontal level (its latest value).
    Level = 1,
}

/// A declared series.
#[derive(Debug, Clone, Copy, serde::Serialize, Deserialize)]
pub struct SeriesId(i32);

fn split(mut value: Decimal) -> (i64, i32) {
    loop {
        if let Ok(m) = i64::try_from(value.mantissa()) {
            return (m, value.scale() as i32);
        }
        if value.scale() == 0 {
            return (if value.is_sign_negative() { i64::MIN } else { i64::MAX }, 0);
        }
        value = value.round_dp(value.scale() - 1);
    }
}

/// The host's functions. Cheap: a unit value.
#[derive(Debug, Default)]
pub struct Host(());

impl Host {
    /// The bot's context now (position, open orders, filters, event time).
    pub fn context(&mut self) -> Context {
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: the host writes at most `cap` bytes into `buf`.
            let len = unsafe { raw::context(buf.as_mut_ptr(), buf.len() as i32) } as usize;
            if len <= buf.len() {
                buf.truncate(len);
                break;
            }
            buf.resize(len, 0);
        }
        match serde_json::from_slice(&buf) {
            Ok(ctx) => ctx,
            Err(e) => fail(&format!("the host's context did not parse: {e}")),
        }
    }

    /// Places an order; the engine's risk checks and the venue's rules still apply.
    pub fn place(&mut self, side: Side, qty: Decimal, order: Order, tag: u32) {
        let (kind, price) = match order {
            Order::Market => (0, Decimal::ZERO),
            Order::Limit(p) => (1, p),
            Order::Stop(p) => (2, p),
        };
        let (qm, qs) = split(qty);
        let (pm, ps) = split(price);
        let side = if side == Side::Buy { 0 } else { 1 };
        // SAFETY: plain values.
        unsafe { raw::place(side, kind, qm, qs, pm, ps, tag as i32) };
    }

    /// Places an order of any type Keel supports, given as the REST API's manual order JSON:
    /// `{"type": "stop_limit", "side": "buy", "qty": "0.01", "stop_price": "105",
    /// "price": "106", "tag": 4}`; `type` is `market`, `limit` (with `price` and an optional
    /// `time_in_force`: `gtc`, `ioc`, `fok` or `post_only`), `stop` (`stop_price`),
    /// `stop_limit` (`stop_price`, `price`) or `trailing_stop` (`trailing_bps`). A field its
    /// type does not have fails the call (and pauses the bot with the reason).
    pub fn place_order(&mut self, order: &serde_json::Value) {
        let json = order.to_string();
        // SAFETY: the pointer and length are of a live buffer the host only reads.
        unsafe { raw::place_order(json.as_ptr(), json.len() as i32) };
    }

    /// Cancels one of the strategy's open orders.
    pub fn cancel(&mut self, order_id: u64) {
        // SAFETY: plain values.
        unsafe { raw::cancel(order_id as i64) }
    }

    /// Cancels every open order of the strategy.
    pub fn cancel_all(&mut self) {
        // SAFETY: no arguments.
        unsafe { raw::cancel_all() }
    }

    /// Writes a line to the bot's journal (0 info, 1 warn, 2 error); at most 4096 bytes.
    pub fn log(&mut self, level: i32, message: &str) {
        let message = &message[..message.len().min(4096)];
        // SAFETY: the host reads `len` bytes at `ptr`.
        unsafe { raw::log(level, message.as_ptr(), message.len() as i32) }
    }

    /// Declares a series (in `init` only).
    pub fn series(
        &mut self,
        name: &str,
        pane: Pane,
        style: Style,
        min: Option<f64>,
        max: Option<f64>,
    ) -> SeriesId {
        let (min, max) = (min.unwrap_or(f64::NAN), max.unwrap_or(f64::NAN));
        // SAFETY: the host reads `len` bytes at `ptr`.
        SeriesId(unsafe {
            raw::series(name.as_ptr(), name.len() as i32, pane as i32, style as i32, min, max)
        })
    }

    /// Publishes a series' value.
    pub fn publish(&mut self, series: SeriesId, value: f64) {
        // SAFETY: plain values.
        unsafe { raw::publish(series.0, value) }
    }

    /// Publishes a series' exact value.
    pub fn publish_decimal(&mut self, series: SeriesId, value: Decimal) {
        let (m, s) = split(value);
        // SAFETY: plain values.
        unsafe { raw::publish_decimal(series.0, m, s) }
    }

    /// Asks for a `timer` event at the first market event at or after `at_ms` (event time);
    /// 0 clears it. One timer at a time.
    pub fn set_timer(&mut self, at_ms: u64) {
        // SAFETY: plain values.
        unsafe { raw::set_timer(at_ms as i64) }
    }

    /// Asks for `candle` events of `secs` seconds built from trades (in `init` only).
    pub fn candles(&mut self, secs: u32) {
        // SAFETY: plain values.
        unsafe { raw::candles(secs as i32) }
    }
}

/// Stops the call with `message` as the reason (at init: the params are refused with it; later:
/// the bot pauses with it).
pub fn fail(message: &str) -> ! {
    // SAFETY: the host reads `len` bytes at `ptr`; it never returns.
    unsafe { raw::fail(message.as_ptr(), message.len() as i32) };
    unreachable!("keel.fail returned")
}

/// A strategy.
pub trait Strategy: Sized {
    /// Its params, read from the bot's `strategy.params` JSON.
    type Params: serde::de::DeserializeOwned;

    /// The JSON Schema of the params (the API validates a bot's params against it).
    const PARAMS_SCHEMA: &'static str;

    /// Builds it, or says why the params are refused. `host.context().filters` has the
    /// instrument's rules; series, candles and timers are declared here.
    fn init(params: Self::Params, host: &mut Host) -> Result<Self, String>;

    /// A trade.
    fn on_trade(&mut self, host: &mut Host, trade: &Trade) {
        let _ = (host, trade);
    }

    /// Any other event, as JSON: `quote`, `fill`, `order`, `timer`, `candle` (its `type` field);
    /// ignore types you do not know (later hosts may add more).
    fn on_event(&mut self, host: &mut Host, event: &serde_json::Value) {
        let _ = (host, event);
    }

    /// The state to keep across restarts.
    fn save(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Takes back what `save` gave (after `init` with the same params).
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Ok(())
    }
}

#[doc(hidden)]
pub mod runtime {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        static SAVED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    pub fn alloc(len: i32) -> i32 {
        INPUT.with_borrow_mut(|buf| {
            buf.clear();
            buf.resize(len.max(0) as usize, 0);
            buf.as_mut_ptr() as i32
        })
    }

    pub fn input() -> Vec<u8> {
        INPUT.with_borrow(|buf| buf.clone())
    }

    pub fn hand_over(state: Vec<u8>) {
        SAVED.with_borrow_mut(|saved| {
            *saved = state;
            // SAFETY: the host reads `len` bytes at `ptr` during this call.
            unsafe { raw::save_state(saved.as_ptr(), saved.len() as i32) };
        });
    }

    pub fn schema(schema: &'static str) -> i64 {
        ((schema.as_ptr() as i64) << 32) | schema.len() as i64
    }

    pub fn trade(ts: i64, pm: i64, ps: i32, qm: i64, qs: i32, side: i32) -> Trade {
        Trade {
            ts: ts as u64,
            price: Decimal::new(pm, ps as u32),
            qty: Decimal::new(qm, qs as u32),
            side: if side == 0 { Side::Buy } else { Side::Sell },
        }
    }

    pub fn price_f64(price: Decimal) -> f64 {
        price.to_f64().unwrap_or(f64::NAN)
    }
}

/// Writes the module's exports for a [`Strategy`] type.
#[macro_export]
macro_rules! export_strategy {
    ($ty:ty) => {
        thread_local! {
            static KEEL_STRATEGY: ::std::cell::RefCell<Option<$ty>> =
                const { ::std::cell::RefCell::new(None) };
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn keel_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn keel_alloc(len: i32) -> i32 {
            $crate::runtime::alloc(len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn keel_params_schema() -> i64 {
            $crate::runtime::schema(<$ty as $crate::Strategy>::PARAMS_SCHEMA)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn keel_init(_ptr: i32, _len: i32) -> i32 {
            let input = $crate::runtime::input();
            let params = match $crate::serde_json::from_slice(&input) {
                Ok(params) => params,
                Err(e) => $crate::fail(&format!("params: {e}")),
            };
            match <$ty as $crate::Strategy>::init(params, &mut $crate::Host::default()) {
                Ok(strategy) => {
                    KEEL_STRATEGY.with_borrow_mut(|s| *s = Some(strategy));
                    0
                }
                Err(e) => $crate::fail(&e),
            }
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn keel_on_trade(
            ts: i64,
            pm: i64,
            ps: i32,
            qm: i64,
            qs: i32,
            side: i32,
        ) -> i32 {
            let trade = $crate::runtime::trade(ts, pm, ps, qm, qs, side);
            KEEL_STRATEGY.with_borrow_mut(|s| match s {
                Some(s) => {
                    $crate::Strategy::on_trade(s, &mut $crate::Host::default(), &trade);
                    0
                }
                None => 1,
            })
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn keel_on_event(_ptr: i32, _len: i32) -> i32 {
            let input = $crate::runtime::input();
            let Ok(event) = $crate::serde_json::from_slice::<$crate::serde_json::Value>(&input)
            else {
                return 2;
            };
            KEEL_STRATEGY.with_borrow_mut(|s| match s {
                Some(s) => {
                    $crate::Strategy::on_event(s, &mut $crate::Host::default(), &event);
                    0
                }
                None => 1,
            })
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn keel_save() -> i32 {
            KEEL_STRATEGY.with_borrow(|s| match s {
                Some(s) => {
                    $crate::runtime::hand_over($crate::Strategy::save(s));
                    0
                }
                None => 1,
            })
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn keel_restore(_ptr: i32, _len: i32) -> i32 {
            let input = $crate::runtime::input();
            KEEL_STRATEGY.with_borrow_mut(|s| match s {
                Some(s) => match $crate::Strategy::restore(s, &input) {
                    Ok(()) => 0,
                    Err(e) => $crate::fail(&e),
                },
                None => 1,
            })
        }
    };
}
