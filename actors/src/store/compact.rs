//! The compact binary form of the high-volume rows: orders, fills and journal rows.
//!
//! A trading bot writes an order, a fill and a journal row on every fill, so their size is most
//! of what the store holds. As JSON (deflated when shorter, [`super::encode_packed`]) they took
//! 195, 132 and 396 B. Here they are [postcard](https://docs.rs/postcard) (varint integers, no
//! field names) behind a version byte:
//!
//! | first byte | form |
//! |---|---|
//! | `{`, `[`, `"` | JSON, as schemas 1–2 wrote every row |
//! | `0x01` | deflated JSON ([`super::pack`], schemas 3–4) |
//! | `0x02` | [`COMPACT_V1`]: the postcard encoding of the private `Wire*` types below |
//!
//! Every reader accepts all three ([`StoredRow::decode_row`], [`decode_journal`]), so a store
//! keeps the rows an older Keel wrote and nothing is rewritten at open: an order is rewritten in
//! the compact form the next time it changes, and fills and journal rows, which never change,
//! keep their form until retention removes them.
//!
//! The `Wire*` types mirror the domain types field by field instead of deriving postcard from
//! them: the domain types use serde's tagged and flattened enums, which need a self-describing
//! format, and a stored row must not change meaning when someone reorders a domain enum. So every
//! enum is mapped to a stored code by an exhaustive `match` both ways (a new domain variant does
//! not compile until it has a code), and the codes, like the field order, are append-only: a
//! change that is not goes under a new version byte. A [`Decimal`] is stored exactly as its scale,
//! sign and 96-bit mantissa, so it reads back with the same digits (`1.50` stays `1.50`).
//! Journal lines other than orders, fills and positions (status changes, breaker changes, logs:
//! a few per bot, not per fill) are stored as their JSON inside the compact row.

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::StoreError;
use keel_core::engine::{BotEvent, BotEventKind};
use keel_core::market::Side;
use keel_core::trading::{
    Commission, FeeAsset, Fill, Liquidity, Order, OrderOrigin, OrderStatus, OrderType, Position,
    TimeInForce,
};

/// First byte of a row in the compact form, version 1.
pub const COMPACT_V1: u8 = 0x02;

/// A row type of the high-volume trees, written compact and read in any stored form.
pub trait StoredRow: Sized {
    /// The row in the compact form ([`COMPACT_V1`]).
    ///
    /// # Errors
    /// Serialisation failed (only on allocation failure).
    fn encode_row(&self) -> Result<Vec<u8>, StoreError>;

    /// A stored row, compact, deflated JSON or JSON.
    ///
    /// # Errors
    /// The bytes are not a valid row in any of the forms.
    fn decode_row(raw: &[u8]) -> Result<Self, StoreError>;
}

impl StoredRow for Order {
    fn encode_row(&self) -> Result<Vec<u8>, StoreError> {
        encode(&WireOrder::from(self))
    }

    fn decode_row(raw: &[u8]) -> Result<Self, StoreError> {
        match compact(raw) {
            Some(body) => Ok(from_bytes::<WireOrder<'_>>(body)?.into()),
            None => super::decode(raw),
        }
    }
}

impl StoredRow for Fill {
    fn encode_row(&self) -> Result<Vec<u8>, StoreError> {
        encode(&WireFill::from(self))
    }

    fn decode_row(raw: &[u8]) -> Result<Self, StoreError> {
        match compact(raw) {
            Some(body) => Ok(from_bytes::<WireFill<'_>>(body)?.into()),
            None => super::decode(raw),
        }
    }
}

/// The journal lines of one write as one compact `events` row.
///
/// # Errors
/// A line's JSON (for the kinds kept as JSON) or the row could not be serialised.
pub fn encode_journal(lines: &[BotEvent]) -> Result<Vec<u8>, StoreError> {
    let mut wire = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let mut event = WireEvent::try_from(line)?;
        // An order placed and filled in one engine call is journaled twice: the second line
        // keeps only what changed.
        if let BotEventKind::Order(order) = &line.kind
            && let Some(earlier) = latest_version(&lines[..i], order.id)
            && placement(earlier)? == placement(order)?
        {
            event.kind = WireEventKind::OrderChange(WireOrderChange {
                id: order.id,
                filled_qty: order.filled_qty,
                avg_fill_price: order.avg_fill_price,
                status: order.status.into(),
                reason: order.reason.as_deref().map(Cow::Borrowed),
                updated_ts: order.updated_ts,
            });
        }
        wire.push(event);
    }
    encode(&wire)
}

/// The last journal line among `lines` about order `id`.
fn latest_version(lines: &[BotEvent], id: u64) -> Option<&Order> {
    lines.iter().rev().find_map(|line| match &line.kind {
        BotEventKind::Order(order) if order.id == id => Some(order),
        _ => None,
    })
}

/// What a [`WireOrderChange`] does not carry, as stored bytes: two versions of an order with the
/// same placement differ only in what the change holds. Bytes, not `==`: `Decimal`'s equality
/// ignores the scale, which a stored row must keep.
fn placement(order: &Order) -> Result<Vec<u8>, StoreError> {
    let mut wire = WireOrder::from(order);
    wire.filled_qty = Decimal::ZERO;
    wire.avg_fill_price = Decimal::ZERO;
    wire.status = WireStatus::New;
    wire.reason = None;
    wire.updated_ts = 0;
    encode(&wire)
}

/// One `events` row: compact, a JSON list (schema 3 on), or a single JSON line (rows written
/// before schema 3; migration 3 repacks them, but either form reads).
///
/// # Errors
/// The row does not decode.
pub fn decode_journal(raw: &[u8]) -> Result<Vec<BotEvent>, StoreError> {
    if let Some(body) = compact(raw) {
        let wire = from_bytes::<Vec<WireEvent<'_>>>(body)?;
        let mut lines = Vec::with_capacity(wire.len());
        for WireEvent { id, ts, kind } in wire {
            let kind = journal_kind(kind, &lines)?;
            lines.push(BotEvent { id, ts, kind });
        }
        return Ok(lines);
    }
    let json = super::unpack(raw)?;
    if json.first() == Some(&b'[') {
        serde_json::from_slice(&json).map_err(StoreError::Codec)
    } else {
        Ok(vec![serde_json::from_slice(&json).map_err(StoreError::Codec)?])
    }
}

/// The body of a compact row, or `None` for the JSON forms.
fn compact(raw: &[u8]) -> Option<&[u8]> {
    raw.split_first().filter(|(first, _)| **first == COMPACT_V1).map(|(_, body)| body)
}

/// The version byte, then the postcard of `wire`.
fn encode<T: Serialize>(wire: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(&(COMPACT_V1, wire))
        .map_err(|e| StoreError::Corrupt(format!("encoding a compact row: {e}")))
}

fn from_bytes<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(body).map_err(|e| StoreError::Corrupt(format!("compact row: {e}")))
}

/// A [`Decimal`] as (scale, with the sign in bit 7; the mantissa's magnitude as a varint), so it
/// reads back exactly, scale and the sign of a zero included.
mod dec {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Bit of the first byte that says the value is negative.
    const NEGATIVE: u8 = 0x80;

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        // A scale is at most 28, so it never reaches the sign bit.
        let flags = value.scale() as u8 | if value.is_sign_negative() { NEGATIVE } else { 0 };
        (flags, value.mantissa().unsigned_abs()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let (flags, magnitude) = <(u8, u128)>::deserialize(d)?;
        let mut value = i128::try_from(magnitude)
            .ok()
            .and_then(|m| Decimal::try_from_i128_with_scale(m, u32::from(flags & !NEGATIVE)).ok())
            .ok_or_else(|| serde::de::Error::custom("decimal out of range"))?;
        value.set_sign_negative(flags & NEGATIVE != 0);
        Ok(value)
    }
}

/// A stored enum code for a domain enum, mapped both ways by exhaustive matches. The codes are
/// the positions in the list: append only.
macro_rules! stored_codes {
    ($(#[$doc:meta])* $wire:ident for $domain:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Serialize, Deserialize)]
        enum $wire { $($variant),+ }

        impl From<$domain> for $wire {
            fn from(value: $domain) -> Self {
                match value { $($domain::$variant => Self::$variant),+ }
            }
        }

        impl From<$wire> for $domain {
            fn from(value: $wire) -> Self {
                match value { $($wire::$variant => Self::$variant),+ }
            }
        }
    };
}

stored_codes!(
    /// [`Side`] as stored.
    WireSide for Side { Buy, Sell }
);
stored_codes!(
    /// [`OrderStatus`] as stored.
    WireStatus for OrderStatus {
        New, Accepted, PartiallyFilled, Filled, Canceled, Rejected, Unknown, Reconciled,
    }
);
stored_codes!(
    /// [`OrderOrigin`] as stored.
    WireOrigin for OrderOrigin { Strategy, Manual, TakeProfit, StopLoss, Close }
);
stored_codes!(
    /// [`TimeInForce`] as stored.
    WireTimeInForce for TimeInForce { Gtc, Ioc, Fok, PostOnly }
);
stored_codes!(
    /// [`Liquidity`] as stored.
    WireLiquidity for Liquidity { Maker, Taker }
);
stored_codes!(
    /// [`FeeAsset`] as stored.
    WireFeeAsset for FeeAsset { Quote, Base, Other }
);

/// [`OrderType`] as stored (variants append only).
#[derive(Debug, Serialize, Deserialize)]
enum WireOrderType {
    Market,
    Limit {
        #[serde(with = "dec")]
        price: Decimal,
        time_in_force: WireTimeInForce,
    },
    Stop {
        #[serde(with = "dec")]
        stop_price: Decimal,
    },
    StopLimit {
        #[serde(with = "dec")]
        stop_price: Decimal,
        #[serde(with = "dec")]
        price: Decimal,
    },
    TrailingStop {
        trailing_bps: u32,
    },
}

impl From<OrderType> for WireOrderType {
    fn from(value: OrderType) -> Self {
        match value {
            OrderType::Market => Self::Market,
            OrderType::Limit { price, time_in_force } => {
                Self::Limit { price, time_in_force: time_in_force.into() }
            }
            OrderType::Stop { stop_price } => Self::Stop { stop_price },
            OrderType::StopLimit { stop_price, price } => Self::StopLimit { stop_price, price },
            OrderType::TrailingStop { trailing_bps } => Self::TrailingStop { trailing_bps },
        }
    }
}

impl From<WireOrderType> for OrderType {
    fn from(value: WireOrderType) -> Self {
        match value {
            WireOrderType::Market => Self::Market,
            WireOrderType::Limit { price, time_in_force } => {
                Self::Limit { price, time_in_force: time_in_force.into() }
            }
            WireOrderType::Stop { stop_price } => Self::Stop { stop_price },
            WireOrderType::StopLimit { stop_price, price } => Self::StopLimit { stop_price, price },
            WireOrderType::TrailingStop { trailing_bps } => Self::TrailingStop { trailing_bps },
        }
    }
}

/// [`Order`] as stored (fields append only).
#[derive(Debug, Serialize, Deserialize)]
struct WireOrder<'a> {
    id: u64,
    bot_id: u64,
    #[serde(borrow)]
    client_order_id: Cow<'a, str>,
    side: WireSide,
    order_type: WireOrderType,
    #[serde(with = "dec")]
    qty: Decimal,
    #[serde(with = "dec")]
    filled_qty: Decimal,
    #[serde(with = "dec")]
    avg_fill_price: Decimal,
    status: WireStatus,
    origin: WireOrigin,
    tag: u32,
    oco_with: Option<u64>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    created_ts: u64,
    updated_ts: u64,
    /// The venue's order list of a native bracket leg.
    #[serde(borrow)]
    venue_list: Option<Cow<'a, str>>,
}

/// `$to { field: $src.field.into(), … }` for the fields two mirror types share, then the fields
/// that need more than `Into`.
macro_rules! mirror {
    ($src:ident => $to:ident { $($field:ident),* $(,)? } $(+ { $($extra:ident: $value:expr),* $(,)? })?) => {
        $to { $($field: $src.$field.into(),)* $($($extra: $value,)*)? }
    };
}

/// The fields of [`Order`] and [`WireOrder`] that convert with `Into` both ways.
macro_rules! order_fields {
    ($src:ident => $to:ident + { $($extra:ident: $value:expr),* $(,)? }) => {
        mirror!($src => $to {
            id, bot_id, side, order_type, qty, filled_qty, avg_fill_price, status, origin, tag,
            oco_with, created_ts, updated_ts,
        } + { $($extra: $value),* })
    };
}

impl<'a> From<&'a Order> for WireOrder<'a> {
    fn from(o: &'a Order) -> Self {
        order_fields!(o => Self + {
            client_order_id: Cow::Borrowed(&o.client_order_id),
            reason: o.reason.as_deref().map(Cow::Borrowed),
            venue_list: o.venue_list.as_deref().map(Cow::Borrowed),
        })
    }
}

impl From<WireOrder<'_>> for Order {
    fn from(o: WireOrder<'_>) -> Self {
        order_fields!(o => Self + {
            client_order_id: o.client_order_id.into_owned(),
            reason: o.reason.map(Cow::into_owned),
            venue_list: o.venue_list.map(Cow::into_owned),
        })
    }
}

/// [`Commission`] as stored.
#[derive(Debug, Serialize, Deserialize)]
struct WireCommission<'a> {
    #[serde(borrow)]
    asset: Cow<'a, str>,
    #[serde(with = "dec")]
    amount: Decimal,
    charged_to: WireFeeAsset,
    quote_value_estimated: bool,
}

/// [`Fill`] as stored (fields append only).
#[derive(Debug, Serialize, Deserialize)]
struct WireFill<'a> {
    id: u64,
    bot_id: u64,
    order_id: u64,
    side: WireSide,
    #[serde(with = "dec")]
    price: Decimal,
    #[serde(with = "dec")]
    qty: Decimal,
    #[serde(with = "dec")]
    fee: Decimal,
    liquidity: WireLiquidity,
    tag: u32,
    ts: u64,
    #[serde(borrow)]
    commission: Option<WireCommission<'a>>,
}

/// The fields of [`Fill`] and [`WireFill`] that convert with `Into` both ways.
macro_rules! fill_fields {
    ($src:ident => $to:ident + { $($extra:ident: $value:expr),* $(,)? }) => {
        mirror!($src => $to {
            id, bot_id, order_id, side, price, qty, fee, liquidity, tag, ts,
        } + { $($extra: $value),* })
    };
}

/// The fields of [`Commission`] and [`WireCommission`] that convert with `Into` both ways.
macro_rules! commission_fields {
    ($src:ident => $to:ident + { $($extra:ident: $value:expr),* $(,)? }) => {
        mirror!($src => $to { amount, charged_to, quote_value_estimated } + { $($extra: $value),* })
    };
}

impl<'a> From<&'a Fill> for WireFill<'a> {
    fn from(f: &'a Fill) -> Self {
        fill_fields!(f => Self + {
            commission: f.commission.as_ref().map(|c| {
                commission_fields!(c => WireCommission + { asset: Cow::Borrowed(&c.asset) })
            }),
        })
    }
}

impl From<WireFill<'_>> for Fill {
    fn from(f: WireFill<'_>) -> Self {
        fill_fields!(f => Self + {
            commission: f.commission.map(|c| {
                commission_fields!(c => Commission + { asset: c.asset.into_owned() })
            }),
        })
    }
}

/// Every field of [`Position`] and [`WirePosition`].
macro_rules! position_fields {
    ($src:ident => $to:ident $(+ { $($extra:ident: $value:expr),* })?) => {
        mirror!($src => $to { qty, avg_entry_price, realized_pnl, fees, quote_balance }
            $(+ { $($extra: $value),* })?)
    };
}

/// [`Position`] as stored.
#[derive(Debug, Serialize, Deserialize)]
struct WirePosition {
    #[serde(with = "dec")]
    qty: Decimal,
    #[serde(with = "dec")]
    avg_entry_price: Decimal,
    #[serde(with = "dec")]
    realized_pnl: Decimal,
    #[serde(with = "dec")]
    fees: Decimal,
    #[serde(with = "dec")]
    quote_balance: Decimal,
}

/// A journal line's [`BotEventKind`] as stored (variants append only): the kinds written on every
/// fill in binary, the rest as their JSON.
#[derive(Debug, Serialize, Deserialize)]
enum WireEventKind<'a> {
    #[serde(borrow)]
    Order(WireOrder<'a>),
    #[serde(borrow)]
    Fill(WireFill<'a>),
    Position(WirePosition),
    /// Any other kind, as the JSON of its [`BotEventKind`].
    #[serde(borrow)]
    Json(Cow<'a, str>),
    /// An order line whose order an earlier line of the same row holds with the same placement.
    #[serde(borrow)]
    OrderChange(WireOrderChange<'a>),
}

/// What changed in an order since the row's earlier line about it.
#[derive(Debug, Serialize, Deserialize)]
struct WireOrderChange<'a> {
    id: u64,
    #[serde(with = "dec")]
    filled_qty: Decimal,
    #[serde(with = "dec")]
    avg_fill_price: Decimal,
    status: WireStatus,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    updated_ts: u64,
}

/// [`BotEvent`] as stored.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent<'a> {
    id: u64,
    ts: u64,
    #[serde(borrow)]
    kind: WireEventKind<'a>,
}

impl<'a> TryFrom<&'a BotEvent> for WireEvent<'a> {
    type Error = StoreError;

    fn try_from(e: &'a BotEvent) -> Result<Self, StoreError> {
        let kind = match &e.kind {
            BotEventKind::Order(order) => WireEventKind::Order(order.into()),
            BotEventKind::Fill(fill) => WireEventKind::Fill(fill.into()),
            // A position with funding (paper or live futures) goes as JSON: the binary form
            // predates the field.
            BotEventKind::Position(p) if p.funding.is_zero() => {
                WireEventKind::Position(position_fields!(p => WirePosition))
            }
            other @ (BotEventKind::Position(_)
            | BotEventKind::Funding { .. }
            | BotEventKind::Liquidated { .. }
            | BotEventKind::Status { .. }
            | BotEventKind::Breaker { .. }
            | BotEventKind::VenuePosition(_)
            | BotEventKind::Log { .. }) => WireEventKind::Json(Cow::Owned(
                serde_json::to_string(other).map_err(StoreError::Codec)?,
            )),
        };
        Ok(Self { id: e.id, ts: e.ts, kind })
    }
}

/// A stored line's kind; `earlier` are the lines before it in its row.
fn journal_kind(kind: WireEventKind<'_>, earlier: &[BotEvent]) -> Result<BotEventKind, StoreError> {
    Ok(match kind {
        WireEventKind::Order(order) => BotEventKind::Order(order.into()),
        WireEventKind::Fill(fill) => BotEventKind::Fill(fill.into()),
        WireEventKind::Position(p) => {
            BotEventKind::Position(position_fields!(p => Position + { funding: Decimal::ZERO }))
        }
        WireEventKind::Json(json) => serde_json::from_str(&json).map_err(StoreError::Codec)?,
        WireEventKind::OrderChange(change) => {
            let mut order = latest_version(earlier, change.id).cloned().ok_or_else(|| {
                StoreError::Corrupt(format!("journal row changes order {} before it", change.id))
            })?;
            order.filled_qty = change.filled_qty;
            order.avg_fill_price = change.avg_fill_price;
            order.status = change.status.into();
            order.reason = change.reason.map(Cow::into_owned);
            order.updated_ts = change.updated_ts;
            BotEventKind::Order(order)
        }
    })
}

#[cfg(test)]
mod tests;
