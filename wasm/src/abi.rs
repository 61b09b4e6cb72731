//! The host side of the strategy ABI (docs/STRATEGY_ABI.md): the functions a module may import
//! from `keel`, the exports it must have, and the per-instance state the imports work on.

use anyhow::{Result, anyhow, bail};
use rust_decimal::Decimal;
use wasmtime::{Caller, Linker, Memory, ResourceLimiter, ValType};

use keel_core::strategy::series::{MAX_SERIES, value_of};
use keel_core::strategy::{Intent, OpenOrderView, SeriesSpec, SeriesStyle};
use keel_core::trading::{InstrumentFilters, OrderRequest, OrderType, Position, Side};

/// The ABI version this host speaks; `keel_abi_version` must return it.
pub const ABI_VERSION: u32 = 1;
/// Intents one call may make; more trap.
pub const MAX_INTENTS_PER_CALL: usize = 64;
/// Longest log line, in bytes; a longer one traps.
pub const MAX_LOG_BYTES: usize = 4096;
/// Log lines one call may write; more are dropped.
pub const MAX_LOGS_PER_CALL: u32 = 16;
/// Largest saved state, in bytes.
pub const MAX_STATE_BYTES: usize = 1 << 20;
/// Largest params JSON schema, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;
/// Longest `fail` message, in bytes.
pub const MAX_FAIL_BYTES: usize = 4096;
/// Longest order JSON `place_order` reads.
pub const MAX_ORDER_BYTES: usize = 1024;

/// Required exports: name and signature.
pub const REQUIRED_EXPORTS: [(&str, &[ValType], &[ValType]); 4] = [
    ("keel_abi_version", &[], &[ValType::I32]),
    ("keel_alloc", &[ValType::I32], &[ValType::I32]),
    ("keel_init", &[ValType::I32, ValType::I32], &[ValType::I32]),
    ("keel_on_event", &[ValType::I32, ValType::I32], &[ValType::I32]),
];

/// Optional exports: name and signature.
pub const OPTIONAL_EXPORTS: [(&str, &[ValType], &[ValType]); 4] = [
    (
        "keel_on_trade",
        &[ValType::I64, ValType::I64, ValType::I32, ValType::I64, ValType::I32, ValType::I32],
        &[ValType::I32],
    ),
    ("keel_params_schema", &[], &[ValType::I64]),
    ("keel_save", &[], &[ValType::I32]),
    ("keel_restore", &[ValType::I32, ValType::I32], &[ValType::I32]),
];

/// What the current call is: some imports are allowed only in some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Instantiation (the start function) and `keel_abi_version`, `keel_params_schema`.
    Load,
    /// `keel_init`: series may be declared.
    Init,
    /// An event.
    Event,
    /// `keel_save`: the state may be handed over.
    Save,
    /// `keel_restore`.
    Restore,
}

/// One instance's host-side state.
#[derive(Debug)]
pub struct HostState {
    /// What the current call is.
    pub phase: Phase,
    /// Memory cap, bytes.
    pub max_memory: usize,
    /// Table cap, elements.
    pub max_table: usize,
    /// Why the limiter refused a growth, if it did (for the failure reason).
    pub refused: Option<String>,
    /// Event time of the current call.
    pub now_ms: u64,
    /// The bot's position at the current call.
    pub position: Position,
    /// The strategy's open orders at the current call.
    pub open_orders: Vec<OpenOrderView>,
    /// The instrument's rules.
    pub filters: InstrumentFilters,
    /// Intents of the current call.
    pub intents: Vec<Intent>,
    /// Declared series.
    pub series: Vec<SeriesSpec>,
    /// Latest value of each series.
    pub values: Vec<Option<Decimal>>,
    /// Log lines written in the current call.
    pub logs: u32,
    /// The timer, event time in ms.
    pub timer: Option<u64>,
    /// Candle interval asked for at init, seconds.
    pub candle_secs: Option<u64>,
    /// State handed over by `keel_save`.
    pub saved: Option<Vec<u8>>,
    /// A message the module gave with `fail`.
    pub failed: Option<String>,
}

impl HostState {
    /// Fresh state for one instance.
    pub fn new(max_memory: usize, max_table: usize, filters: InstrumentFilters) -> Self {
        Self {
            phase: Phase::Load,
            max_memory,
            max_table,
            refused: None,
            now_ms: 0,
            position: Position::default(),
            open_orders: Vec::new(),
            filters,
            intents: Vec::new(),
            series: Vec::new(),
            values: Vec::new(),
            logs: 0,
            timer: None,
            candle_secs: None,
            saved: None,
            failed: None,
        }
    }

    /// The context JSON `keel.context` writes.
    fn context_json(&self) -> Vec<u8> {
        let orders: Vec<serde_json::Value> = self
            .open_orders
            .iter()
            .map(|o| {
                serde_json::json!({
                    "id": o.id, "side": o.side, "price": o.price, "remaining": o.remaining,
                    "tag": o.tag,
                })
            })
            .collect();
        let p = &self.position;
        let f = &self.filters;
        serde_json::json!({
            "now_ms": self.now_ms,
            "position": {
                "qty": p.qty, "avg_entry_price": p.avg_entry_price, "realized_pnl": p.realized_pnl,
                "fees": p.fees, "quote_balance": p.quote_balance,
            },
            "open_orders": orders,
            "filters": {
                "tick_size": f.tick_size, "step_size": f.step_size, "min_qty": f.min_qty,
                "max_qty": f.max_qty, "min_notional": f.min_notional,
            },
        })
        .to_string()
        .into_bytes()
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, current: usize, desired: usize, _: Option<usize>) -> Result<bool> {
        if desired > self.max_memory {
            let why = format!(
                "memory would grow from {current} to {desired} bytes, over the cap of {} bytes",
                self.max_memory
            );
            self.refused = Some(why.clone());
            bail!(why);
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _: Option<usize>) -> Result<bool> {
        if desired > self.max_table {
            let why = format!(
                "a table would grow from {current} to {desired} elements, over the cap of {}",
                self.max_table
            );
            self.refused = Some(why.clone());
            bail!(why);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// A decimal from the ABI's (mantissa, scale) pair.
pub fn decimal(mantissa: i64, scale: i32) -> Result<Decimal> {
    let scale = u32::try_from(scale).ok().filter(|s| *s <= 28);
    let scale = scale.ok_or_else(|| anyhow!("a decimal's scale must be 0 to 28"))?;
    // Normalised, as the host's own decimals are: 0.00100 and 0.001 are one quantity, and
    // reports and positions must not differ by trailing zeros between a module and a built-in.
    Ok(Decimal::new(mantissa, scale).normalize())
}

/// A decimal as the ABI's (mantissa, scale) pair, rounded to fewer places if its mantissa does
/// not fit 64 bits.
pub fn split(mut value: Decimal) -> (i64, i32) {
    loop {
        if let Ok(m) = i64::try_from(value.mantissa()) {
            return (m, value.scale() as i32);
        }
        if value.scale() == 0 {
            let m = if value.is_sign_negative() { i64::MIN } else { i64::MAX };
            return (m, 0);
        }
        value = value.round_dp(value.scale() - 1);
    }
}

fn memory(caller: &mut Caller<'_, HostState>) -> Result<Memory> {
    caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| anyhow!("the module exports no memory"))
}

/// Copies `len` bytes at `ptr` out of the guest, refusing more than `cap`.
fn read(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
    cap: usize,
    what: &str,
) -> Result<Vec<u8>> {
    let len = len as u32 as usize;
    if len > cap {
        bail!("{what} of {len} bytes is over the cap of {cap} bytes");
    }
    let start = ptr as u32 as usize;
    let memory = memory(caller)?;
    memory
        .data(&caller)
        .get(start..start + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| anyhow!("{what} at {start} (+{len}) is outside the module's memory"))
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| anyhow!("{what} is not UTF-8"))
}

fn only_in(caller: &Caller<'_, HostState>, phases: &[Phase], import: &str) -> Result<()> {
    if phases.contains(&caller.data().phase) {
        Ok(())
    } else {
        bail!("keel.{import} may not be called during {:?}", caller.data().phase)
    }
}

fn push_intent(caller: &mut Caller<'_, HostState>, intent: Intent) -> Result<()> {
    only_in(caller, &[Phase::Event], "intents")?;
    let intents = &mut caller.data_mut().intents;
    if intents.len() >= MAX_INTENTS_PER_CALL {
        bail!("more than {MAX_INTENTS_PER_CALL} orders and cancels in one call");
    }
    intents.push(intent);
    Ok(())
}

/// An order of any type Keel supports, as `place_order` takes it: the JSON of the REST API's
/// manual order (`type` market, limit, stop, stop_limit or trailing_stop, with the price fields
/// that type has; decimals as strings or numbers). A field the type does not have is refused
/// rather than dropped. Stricter than the API, which reads a `limit` with a `stop_price` as a
/// stop-limit: a module names its type.
fn order_request(json: &[u8]) -> Result<OrderRequest> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| anyhow!("keel.place_order: the order is not JSON: {e}"))?;
    let kind = value.get("type").and_then(serde_json::Value::as_str).unwrap_or("");
    let allowed: &[&str] = match kind {
        "market" => &[],
        "limit" => &["price", "time_in_force"],
        "stop" => &["stop_price"],
        "stop_limit" => &["stop_price", "price"],
        "trailing_stop" => &["trailing_bps"],
        other => bail!(
            "keel.place_order: type {other:?} is not market, limit, stop, stop_limit or \
             trailing_stop"
        ),
    };
    if let Some(fields) = value.as_object() {
        let common = ["type", "side", "qty", "tag"];
        if let Some(extra) =
            fields.keys().find(|k| !common.contains(&k.as_str()) && !allowed.contains(&k.as_str()))
        {
            bail!("keel.place_order: a {kind} order has no field {extra:?}");
        }
    }
    serde_json::from_value(value).map_err(|e| anyhow!("keel.place_order: {e}"))
}

/// The names a module may import from `keel`.
pub const IMPORTS: [&str; 13] = [
    "candles",
    "context",
    "place",
    "place_order",
    "cancel",
    "cancel_all",
    "log",
    "series",
    "publish",
    "publish_decimal",
    "set_timer",
    "save_state",
    "fail",
];

/// A linker with every `keel` import.
///
/// # Errors
/// Never in practice (the names are distinct).
pub fn linker(engine: &wasmtime::Engine) -> Result<Linker<HostState>> {
    let mut l = Linker::new(engine);
    l.func_wrap(
        "keel",
        "context",
        |mut c: Caller<'_, HostState>, ptr: i32, cap: i32| -> Result<i32> {
            let json = c.data().context_json();
            let len = i32::try_from(json.len())?;
            if json.len() <= cap as u32 as usize {
                let memory = memory(&mut c)?;
                memory.write(&mut c, ptr as u32 as usize, &json).map_err(|_| {
                    anyhow!("keel.context: the buffer at {ptr} is outside the module's memory")
                })?;
            }
            Ok(len)
        },
    )?;
    l.func_wrap(
        "keel",
        "place",
        |mut c: Caller<'_, HostState>,
         side: i32,
         kind: i32,
         qty_m: i64,
         qty_s: i32,
         price_m: i64,
         price_s: i32,
         tag: i32|
         -> Result<i32> {
            let side = match side {
                0 => Side::Buy,
                1 => Side::Sell,
                other => bail!("keel.place: side {other} is neither 0 (buy) nor 1 (sell)"),
            };
            let qty = decimal(qty_m, qty_s)?;
            let order_type = match kind {
                0 => OrderType::Market,
                1 => OrderType::limit(decimal(price_m, price_s)?),
                2 => OrderType::Stop { stop_price: decimal(price_m, price_s)? },
                other => bail!("keel.place: kind {other} is not 0 (market), 1 (limit) or 2 (stop)"),
            };
            let tag = tag as u32;
            push_intent(&mut c, Intent::Place(OrderRequest { side, qty, order_type, tag }))?;
            Ok(0)
        },
    )?;
    l.func_wrap(
        "keel",
        "place_order",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32| -> Result<i32> {
            let json = read(&mut c, ptr, len, MAX_ORDER_BYTES, "keel.place_order: the order")?;
            let req = order_request(&json)?;
            push_intent(&mut c, Intent::Place(req))?;
            Ok(0)
        },
    )?;
    l.func_wrap("keel", "cancel", |mut c: Caller<'_, HostState>, id: i64| -> Result<()> {
        push_intent(&mut c, Intent::Cancel(id as u64))
    })?;
    l.func_wrap("keel", "cancel_all", |mut c: Caller<'_, HostState>| -> Result<()> {
        push_intent(&mut c, Intent::CancelAll)
    })?;
    l.func_wrap(
        "keel",
        "log",
        |mut c: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| -> Result<()> {
            let message = text(
                read(&mut c, ptr, len, MAX_LOG_BYTES, "keel.log: the message")?,
                "a log line",
            )?;
            let level = match level {
                0 => "info",
                1 => "warn",
                _ => "error",
            };
            let state = c.data_mut();
            if state.phase != Phase::Event {
                tracing::debug!(level, %message, "strategy log outside an event");
                return Ok(());
            }
            state.logs += 1;
            if state.logs <= MAX_LOGS_PER_CALL {
                state.intents.push(Intent::Log { level: level.into(), message });
            }
            Ok(())
        },
    )?;
    l.func_wrap(
        "keel",
        "series",
        |mut c: Caller<'_, HostState>,
         ptr: i32,
         len: i32,
         pane: i32,
         style: i32,
         min: f64,
         max: f64|
         -> Result<i32> {
            only_in(&c, &[Phase::Init], "series")?;
            let name = text(read(&mut c, ptr, len, 64, "keel.series: the name")?, "a series name")?;
            if let Some(problem) = SeriesSpec::name_problem(&name) {
                bail!("keel.series: the name `{name}` {problem}");
            }
            let state = c.data_mut();
            if state.series.iter().any(|s| s.name == name) {
                bail!("keel.series: `{name}` is declared twice");
            }
            if state.series.len() >= MAX_SERIES {
                bail!("keel.series: more than {MAX_SERIES} series");
            }
            let mut spec = match (pane, style) {
                (0, 0) => SeriesSpec::price_line(name),
                (0, 1) => SeriesSpec::price_level(name),
                (1, 0) => SeriesSpec::own_line(name, None, None),
                (1, 1) => {
                    let mut s = SeriesSpec::own_line(name, None, None);
                    s.style = SeriesStyle::Level;
                    s
                }
                _ => bail!(
                    "keel.series: pane must be 0 (price) or 1 (own), style 0 (line) or 1 (level)"
                ),
            };
            spec.min = min.is_finite().then_some(min);
            spec.max = max.is_finite().then_some(max);
            state.series.push(spec);
            state.values.push(None);
            Ok((state.series.len() - 1) as i32)
        },
    )?;
    l.func_wrap(
        "keel",
        "publish",
        |mut c: Caller<'_, HostState>, index: i32, value: f64| -> Result<()> {
            let slot = c.data_mut().values.get_mut(index as u32 as usize);
            let slot = slot.ok_or_else(|| anyhow!("keel.publish: no series {index}"))?;
            *slot = value_of(value);
            Ok(())
        },
    )?;
    l.func_wrap(
        "keel",
        "publish_decimal",
        |mut c: Caller<'_, HostState>, index: i32, m: i64, s: i32| -> Result<()> {
            let value = decimal(m, s)?;
            let slot = c.data_mut().values.get_mut(index as u32 as usize);
            *slot.ok_or_else(|| anyhow!("keel.publish_decimal: no series {index}"))? = Some(value);
            Ok(())
        },
    )?;
    l.func_wrap("keel", "set_timer", |mut c: Caller<'_, HostState>, at_ms: i64| -> Result<()> {
        only_in(&c, &[Phase::Init, Phase::Event, Phase::Restore], "set_timer")?;
        c.data_mut().timer = u64::try_from(at_ms).ok().filter(|t| *t > 0);
        Ok(())
    })?;
    l.func_wrap("keel", "candles", |mut c: Caller<'_, HostState>, secs: i32| -> Result<()> {
        only_in(&c, &[Phase::Init], "candles")?;
        let secs = u64::try_from(secs).ok().filter(|s| (1..=86_400).contains(s));
        c.data_mut().candle_secs =
            Some(secs.ok_or_else(|| anyhow!("keel.candles: the interval must be 1 to 86400 s"))?);
        Ok(())
    })?;
    l.func_wrap(
        "keel",
        "save_state",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32| -> Result<()> {
            only_in(&c, &[Phase::Save], "save_state")?;
            let state = read(&mut c, ptr, len, MAX_STATE_BYTES, "keel.save_state: the state")?;
            c.data_mut().saved = Some(state);
            Ok(())
        },
    )?;
    l.func_wrap(
        "keel",
        "fail",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32| -> Result<()> {
            let message = read(&mut c, ptr, len, MAX_FAIL_BYTES, "keel.fail: the message")?;
            let message = String::from_utf8_lossy(&message).into_owned();
            c.data_mut().failed = Some(message.clone());
            bail!(Failed(message))
        },
    )?;
    Ok(l)
}

/// The error `keel.fail` raises: the module's own reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);
