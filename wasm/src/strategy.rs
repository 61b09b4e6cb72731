//! [`WasmStrategy`]: a module behind the core `Strategy` trait, so paper, live and backtest run
//! it through the same engine as the built-ins.

use std::cell::RefCell;
use std::sync::Arc;

use base64::Engine as _;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::json;
use wasmtime::{Memory, Store, TypedFunc};

use crate::abi::{HostState, Phase, split};
use crate::host::{Compiled, ModuleError, SCHEMA_CAP, WasmHost, describe};
use keel_core::market::{EventKind, MarketEvent, Side};
use keel_core::strategy::{Intent, SeriesSpec, Strategy, StrategyContext};
use keel_core::trading::{Fill, InstrumentFilters, Order};

type TradeFn = TypedFunc<(i64, i64, i32, i64, i32, i32), i32>;

/// One live instance of a module.
pub(crate) struct Instance {
    store: Store<HostState>,
    memory: Memory,
    fuel: u64,
    alloc: TypedFunc<i32, i32>,
    init: TypedFunc<(i32, i32), i32>,
    on_event: TypedFunc<(i32, i32), i32>,
    on_trade: Option<TradeFn>,
    abi_version: TypedFunc<(), i32>,
    schema: Option<TypedFunc<(), i64>>,
    save: Option<TypedFunc<(), i32>>,
    restore: Option<TypedFunc<(i32, i32), i32>>,
}

impl Instance {
    pub(crate) fn new(
        mut store: Store<HostState>,
        instance: wasmtime::Instance,
        compiled: Arc<Compiled>,
        fuel: u64,
    ) -> Result<Self, ModuleError> {
        let abi = |e: anyhow::Error| ModuleError::Abi(format!("{e:#}"));
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| ModuleError::Abi("missing export `memory`".into()))?;
        let alloc = instance.get_typed_func(&mut store, "keel_alloc").map_err(abi)?;
        let init = instance.get_typed_func(&mut store, "keel_init").map_err(abi)?;
        let on_event = instance.get_typed_func(&mut store, "keel_on_event").map_err(abi)?;
        let abi_version = instance.get_typed_func(&mut store, "keel_abi_version").map_err(abi)?;
        let on_trade = if compiled.has_trade {
            Some(instance.get_typed_func(&mut store, "keel_on_trade").map_err(abi)?)
        } else {
            None
        };
        let schema = if compiled.has_schema {
            Some(instance.get_typed_func(&mut store, "keel_params_schema").map_err(abi)?)
        } else {
            None
        };
        let save = if compiled.has_save {
            Some(instance.get_typed_func(&mut store, "keel_save").map_err(abi)?)
        } else {
            None
        };
        let restore = if compiled.has_restore {
            Some(instance.get_typed_func(&mut store, "keel_restore").map_err(abi)?)
        } else {
            None
        };
        Ok(Self {
            store,
            memory,
            fuel,
            alloc,
            init,
            on_event,
            on_trade,
            abi_version,
            schema,
            save,
            restore,
        })
    }

    /// Runs one guest call under a fresh fuel budget; a nonzero status is an error.
    fn call<R>(
        &mut self,
        phase: Phase,
        f: impl FnOnce(&mut Store<HostState>) -> anyhow::Result<R>,
    ) -> Result<R, String> {
        let state = self.store.data_mut();
        state.phase = phase;
        state.logs = 0;
        state.refused = None;
        self.store.set_fuel(self.fuel).map_err(|e| e.to_string())?;
        let result = f(&mut self.store);
        result.map_err(|e| describe(&e, self.store.data(), self.fuel))
    }

    fn status(name: &str, code: i32) -> anyhow::Result<()> {
        if code == 0 { Ok(()) } else { Err(anyhow::anyhow!("{name} returned error code {code}")) }
    }

    pub(crate) fn abi_version(&mut self) -> Result<u32, ModuleError> {
        let f = self.abi_version.clone();
        let v = self.call(Phase::Load, |s| f.call(s, ())).map_err(ModuleError::Abi)?;
        u32::try_from(v).map_err(|_| ModuleError::Abi(format!("keel_abi_version returned {v}")))
    }

    pub(crate) fn params_schema(&mut self) -> Result<Vec<u8>, ModuleError> {
        let Some(f) = self.schema.clone() else { return Ok(b"{}".to_vec()) };
        let packed = self.call(Phase::Load, |s| f.call(s, ())).map_err(ModuleError::Abi)?;
        let (ptr, len) = ((packed >> 32) as u32 as usize, packed as u32 as usize);
        if len > SCHEMA_CAP {
            return Err(ModuleError::Abi(format!(
                "keel_params_schema is {len} bytes, over the cap of {SCHEMA_CAP} bytes"
            )));
        }
        self.memory
            .data(&self.store)
            .get(ptr..ptr + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| ModuleError::Abi("keel_params_schema points outside memory".into()))
    }

    /// Copies `bytes` into guest memory it allocated with `keel_alloc`.
    fn put(&mut self, phase: Phase, bytes: &[u8]) -> Result<(i32, i32), String> {
        let len = i32::try_from(bytes.len()).map_err(|_| "input too large".to_owned())?;
        let alloc = self.alloc.clone();
        let ptr = self.call(phase, |s| alloc.call(s, len))?;
        self.memory
            .write(&mut self.store, ptr as u32 as usize, bytes)
            .map_err(|_| format!("keel_alloc returned {ptr}, outside the module's memory"))?;
        Ok((ptr, len))
    }

    fn init(&mut self, params: &[u8]) -> Result<(), String> {
        let (ptr, len) = self.put(Phase::Init, params)?;
        let f = self.init.clone();
        self.call(Phase::Init, |s| Self::status("keel_init", f.call(s, (ptr, len))?))
    }

    fn event(&mut self, json: &[u8]) -> Result<(), String> {
        let (ptr, len) = self.put(Phase::Event, json)?;
        let f = self.on_event.clone();
        self.call(Phase::Event, |s| Self::status("keel_on_event", f.call(s, (ptr, len))?))
    }

    fn trade(&mut self, ts: u64, price: Decimal, qty: Decimal, side: Side) -> Result<(), String> {
        let (pm, ps) = split(price);
        let (qm, qs) = split(qty);
        let side = i32::from(side == Side::Sell);
        match self.on_trade.clone() {
            Some(f) => self.call(Phase::Event, |s| {
                Self::status("keel_on_trade", f.call(s, (ts as i64, pm, ps, qm, qs, side))?)
            }),
            None => {
                let side = if side == 0 { "buy" } else { "sell" };
                let json =
                    json!({"type": "trade", "ts": ts, "price": price, "qty": qty, "side": side});
                self.event(json.to_string().as_bytes())
            }
        }
    }

    fn save(&mut self) -> Result<Option<Vec<u8>>, String> {
        let Some(f) = self.save.clone() else { return Ok(None) };
        self.store.data_mut().saved = None;
        self.call(Phase::Save, |s| Self::status("keel_save", f.call(s, ())?))?;
        Ok(self.store.data_mut().saved.take())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let Some(f) = self.restore.clone() else { return Ok(()) };
        let (ptr, len) = self.put(Phase::Restore, state)?;
        self.call(Phase::Restore, |s| Self::status("keel_restore", f.call(s, (ptr, len))?))
    }

    fn state(&mut self) -> &mut HostState {
        self.store.data_mut()
    }
}

/// A candle being built from trades, for a module that asked for candles.
#[derive(Debug, Clone, Copy)]
struct Candle {
    open_ts: u64,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: Decimal,
}

/// An uploaded module as a strategy. State across restarts is a snapshot through the host:
/// `keel_save` hands the module's bytes over, kept with the bot's state, and `keel_restore` gets
/// them back after `keel_init` with the same params.
pub struct WasmStrategy {
    host: WasmHost,
    compiled: Arc<Compiled>,
    params: serde_json::Value,
    filters: InstrumentFilters,
    inner: RefCell<Inner>,
}

struct Inner {
    instance: Option<Instance>,
    failed: Option<String>,
    candle: Option<Candle>,
    /// The last state saved successfully, given back after a failure and a resume.
    last_saved: Option<serde_json::Value>,
    series: Vec<SeriesSpec>,
}

impl std::fmt::Debug for WasmStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("WasmStrategy")
            .field("sha256", &self.compiled.sha256)
            .field("failed", &inner.failed)
            .finish_non_exhaustive()
    }
}

impl WasmStrategy {
    pub(crate) fn start(
        host: WasmHost,
        compiled: Arc<Compiled>,
        params: serde_json::Value,
        filters: InstrumentFilters,
    ) -> Result<Self, ModuleError> {
        let instance = Self::fresh(&host, &compiled, &params, &filters)?;
        let series = instance.store.data().series.clone();
        let candle = None;
        let inner =
            Inner { instance: Some(instance), failed: None, candle, last_saved: None, series };
        Ok(Self { host, compiled, params, filters, inner: RefCell::new(inner) })
    }

    fn fresh(
        host: &WasmHost,
        compiled: &Arc<Compiled>,
        params: &serde_json::Value,
        filters: &InstrumentFilters,
    ) -> Result<Instance, ModuleError> {
        let mut instance = host.instantiate(compiled, filters.clone())?;
        let params = match params {
            serde_json::Value::Null => b"{}".to_vec(),
            other => other.to_string().into_bytes(),
        };
        instance.init(&params).map_err(ModuleError::Params)?;
        Ok(instance)
    }

    /// The module's content hash.
    pub fn sha256(&self) -> &str {
        &self.compiled.sha256
    }

    /// Fuel left after the last call (for measurements).
    pub fn fuel_left(&self) -> Option<u64> {
        self.inner.borrow().instance.as_ref().and_then(|i| i.store.get_fuel().ok())
    }
}

impl Inner {
    /// Runs `f` on the instance, recording a failure (the instance is dropped: it is not called
    /// again until a resume).
    fn run(&mut self, f: impl FnOnce(&mut Instance) -> Result<(), String>) {
        let Some(instance) = self.instance.as_mut() else { return };
        if let Err(why) = f(instance) {
            tracing::warn!(reason = %why, "wasm strategy failed");
            self.failed = Some(why);
            self.instance = None;
        }
    }

    fn load_context(&mut self, ctx: &StrategyContext<'_>) {
        let Some(instance) = self.instance.as_mut() else { return };
        let state = instance.state();
        state.now_ms = ctx.now_ms;
        state.position = ctx.position.clone();
        state.open_orders.clear();
        state.open_orders.extend_from_slice(ctx.open_orders);
    }

    fn take_intents(&mut self, out: &mut Vec<Intent>) {
        if let Some(instance) = self.instance.as_mut() {
            out.append(&mut instance.state().intents);
        }
    }

    fn fire_timer(&mut self, now: u64) {
        let due = self.instance.as_mut().and_then(|i| {
            let state = i.state();
            state.timer.filter(|at| *at <= now).inspect(|_| state.timer = None)
        });
        if let Some(at) = due {
            let json = json!({"type": "timer", "ts": now, "at": at}).to_string();
            self.run(|i| i.event(json.as_bytes()));
        }
    }

    fn candles(&mut self, ts: u64, price: Decimal, qty: Decimal) {
        let Some(secs) = self.instance.as_mut().and_then(|i| i.state().candle_secs) else {
            return;
        };
        let ms = secs * 1000;
        let open_ts = ts - ts % ms;
        match &mut self.candle {
            Some(c) if c.open_ts == open_ts => {
                c.high = c.high.max(price);
                c.low = c.low.min(price);
                c.close = price;
                c.volume += qty;
                return;
            }
            _ => {}
        }
        let next =
            Candle { open_ts, open: price, high: price, low: price, close: price, volume: qty };
        if let Some(c) = self.candle.replace(next) {
            let json = json!({
                "type": "candle", "ts": ts, "interval_secs": secs, "open_ts": c.open_ts,
                "open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume,
            })
            .to_string();
            self.run(|i| i.event(json.as_bytes()));
        }
    }
}

impl Strategy for WasmStrategy {
    fn on_event(&mut self, event: &MarketEvent, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        let inner = self.inner.get_mut();
        if inner.instance.is_none() {
            return;
        }
        inner.load_context(ctx);
        inner.fire_timer(event.exchange_ts);
        match &event.kind {
            EventKind::Trade { price, qty, side, .. } => {
                inner.candles(event.exchange_ts, *price, *qty);
                let (ts, price, qty, side) = (event.exchange_ts, *price, *qty, *side);
                inner.run(|i| i.trade(ts, price, qty, side));
            }
            EventKind::Quote { bid, bid_qty, ask, ask_qty } => {
                let json = json!({
                    "type": "quote", "ts": event.exchange_ts, "bid": bid, "bid_qty": bid_qty,
                    "ask": ask, "ask_qty": ask_qty,
                })
                .to_string();
                inner.run(|i| i.event(json.as_bytes()));
            }
            _ => {}
        }
        inner.take_intents(out);
    }

    fn wants_order_updates(&self) -> bool {
        true
    }

    fn on_order(&mut self, order: &Order, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        let inner = self.inner.get_mut();
        if inner.instance.is_none() {
            return;
        }
        inner.load_context(ctx);
        let json = json!({
            "type": "order", "ts": ctx.now_ms, "order_id": order.id, "side": order.side,
            "order_type": order.order_type, "status": order.status, "qty": order.qty,
            "filled_qty": order.filled_qty, "avg_fill_price": order.avg_fill_price,
            "reason": order.reason, "tag": order.tag,
        })
        .to_string();
        inner.run(|i| i.event(json.as_bytes()));
        inner.take_intents(out);
    }

    fn on_fill(&mut self, fill: &Fill, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        let inner = self.inner.get_mut();
        if inner.instance.is_none() {
            return;
        }
        inner.load_context(ctx);
        let json = json!({
            "type": "fill", "ts": fill.ts, "order_id": fill.order_id, "side": fill.side,
            "price": fill.price, "qty": fill.qty, "fee": fill.fee, "tag": fill.tag,
        })
        .to_string();
        inner.run(|i| i.event(json.as_bytes()));
        inner.take_intents(out);
    }

    fn save(&self) -> serde_json::Value {
        let mut inner = self.inner.borrow_mut();
        let mut saved = None;
        inner.run(|i| {
            saved = i.save()?;
            Ok(())
        });
        let Some(bytes) = saved else { return inner.last_saved.clone().unwrap_or_default() };
        let value = json!({
            "abi_version": crate::abi::ABI_VERSION,
            "sha256": self.compiled.sha256,
            "params": self.params,
            "state": base64::engine::general_purpose::STANDARD.encode(bytes),
        });
        inner.last_saved = Some(value.clone());
        value
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error> {
        use serde::de::Error;
        if state.is_null() {
            return Ok(());
        }
        if state["sha256"].as_str() != Some(self.compiled.sha256.as_str())
            || state["params"] != self.params
        {
            return Err(serde_json::Error::custom("saved by another module or other params"));
        }
        let bytes = state["state"]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or_else(|| serde_json::Error::custom("no module state"))?;
        let inner = self.inner.get_mut();
        inner.run(|i| i.restore(&bytes));
        inner.last_saved = Some(state);
        Ok(())
    }

    fn series(&self) -> Vec<SeriesSpec> {
        self.inner.borrow().series.clone()
    }

    fn series_values(&self, _ctx: &StrategyContext<'_>, out: &mut [Option<Decimal>]) {
        let mut inner = self.inner.borrow_mut();
        let Some(instance) = inner.instance.as_mut() else { return };
        for (slot, value) in out.iter_mut().zip(&instance.state().values) {
            *slot = *value;
        }
    }

    fn failure(&self) -> Option<String> {
        self.inner.borrow().failed.clone()
    }

    fn resume(&mut self) {
        let inner = self.inner.get_mut();
        if inner.failed.is_none() {
            return;
        }
        match Self::fresh(&self.host, &self.compiled, &self.params, &self.filters) {
            Ok(instance) => {
                let inner = self.inner.get_mut();
                inner.instance = Some(instance);
                inner.failed = None;
                inner.candle = None;
                if let Some(saved) = inner.last_saved.clone() {
                    let _ = self.restore(saved);
                }
            }
            Err(err) => self.inner.get_mut().failed = Some(err.to_string()),
        }
    }
}

/// A trade's price as the `f64` the built-in indicators use (for the SDK's parity).
pub fn price_f64(price: Decimal) -> Option<f64> {
    price.to_f64()
}
