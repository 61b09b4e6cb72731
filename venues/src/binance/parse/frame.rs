//! The borrowed shape of a Binance frame and the one-pass reader that fills it: every field any
//! frame Keel meets can carry, read in place in any key order, with the few keys whose type
//! varies between events (`a`, `b`) read into [`Flex`].

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::decimal::level;
use super::{LEVELS_CAPACITY, ParseError};
use keel_core::market::Level;

/// A whole frame: the wrapper's `stream` and its `data`, or a raw payload. Both fill the one
/// `body` (half the stack a separate body for each would take, and it is written on every frame):
/// a payload key both in the wrapper and in its `data` is a duplicate field.
#[derive(Default)]
pub(super) struct Frame<'a> {
    pub(super) stream: Option<&'a str>,
    pub(super) data: Presence,
    pub(super) body: Body<'a>,
}

/// Whether an object-valued key was seen, and as an object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    #[default]
    Absent,
    Object,
    Other,
}

/// Every field Keel reads from any payload, all optional, so one pass reads any frame in any
/// key order; objects nested in it are read in place, never moved.
#[derive(Default)]
pub(super) struct Body<'a> {
    /// `e`.
    pub(super) event: Option<&'a str>,
    /// `E`.
    pub(super) event_time: Option<u64>,
    /// `T`: trade or transaction time.
    pub(super) time: Option<u64>,
    /// `r`: the funding rate (`markPriceUpdate`).
    pub(super) funding_rate: Option<&'a str>,
    /// `s`.
    pub(super) symbol: Option<&'a str>,
    /// `t`.
    pub(super) trade_id: Option<u64>,
    /// `p`.
    pub(super) price: Option<&'a str>,
    /// `q`.
    pub(super) qty: Option<&'a str>,
    /// `m`.
    pub(super) buyer_is_maker: Option<bool>,
    /// `a`: the aggregate trade id (`aggTrade`), best ask (`bookTicker`), asks (`depthUpdate`);
    /// also `asks` (partial depth).
    pub(super) a: Option<Flex<'a>>,
    /// `b`: best bid (`bookTicker`), bids (`depthUpdate`); also `bids` (partial depth).
    pub(super) b: Option<Flex<'a>>,
    /// `A`.
    pub(super) ask_qty: Option<&'a str>,
    /// `B`.
    pub(super) bid_qty: Option<&'a str>,
    /// `u`: the book update id (`bookTicker`), the last one in a `depthUpdate`.
    pub(super) update_id: Option<u64>,
    /// `lastUpdateId` (partial depth).
    pub(super) last_update_id: Option<u64>,
    /// Whether `k` was there, and an object (`kline`).
    pub(super) k: Presence,
    pub(super) kline: Option<Kline<'a>>,
    /// Whether `o` was there, and an object (`forceOrder`; `24hrTicker` has a price there).
    pub(super) o: Presence,
    pub(super) order: Option<Order<'a>>,
    /// Whether `result` was there, even as `null` (control replies).
    pub(super) result: bool,
    pub(super) id: Option<u64>,
    pub(super) code: Option<i64>,
    pub(super) msg: Option<String>,
}

/// `k` of a `kline` event.
#[derive(Default)]
pub(super) struct Kline<'a> {
    pub(super) open_time: Option<u64>,
    pub(super) symbol: Option<&'a str>,
    pub(super) interval: Option<&'a str>,
    pub(super) open: Option<&'a str>,
    pub(super) high: Option<&'a str>,
    pub(super) low: Option<&'a str>,
    pub(super) close: Option<&'a str>,
    pub(super) volume: Option<&'a str>,
    pub(super) closed: Option<bool>,
}

/// `o` of a `forceOrder` event.
#[derive(Default)]
pub(super) struct Order<'a> {
    pub(super) symbol: Option<&'a str>,
    pub(super) side: Option<&'a str>,
    pub(super) price: Option<&'a str>,
    pub(super) qty: Option<&'a str>,
    pub(super) time: Option<u64>,
}

/// Reads one value into `slot`. A key seen twice is an error, as in derived deserializers.
/// `null` is a type error, not an absent field: Binance does not send it in these fields.
fn put<'de, T, A>(slot: &mut Option<T>, map: &mut A, key: &'static str) -> Result<(), A::Error>
where
    T: Deserialize<'de>,
    A: MapAccess<'de>,
{
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// Reads an object-valued key into `target` in place.
fn put_object<'de, T, A>(
    presence: &mut Presence,
    target: &mut T,
    map: &mut A,
    key: &'static str,
) -> Result<(), A::Error>
where
    T: Fill<'de>,
    A: MapAccess<'de>,
{
    if *presence != Presence::Absent {
        return Err(de::Error::duplicate_field(key));
    }
    *presence = map.next_value_seed(InPlace(target))?;
    Ok(())
}

/// Something filled in place from a JSON object's entries.
trait Fill<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error>;
}

impl<'de> Fill<'de> for Frame<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "stream" => put(&mut self.stream, &mut map, "stream")?,
                "data" => put_object(&mut self.data, &mut self.body, &mut map, "data")?,
                _ => body_entry(&mut self.body, key, &mut map)?,
            }
        }
        Ok(())
    }
}

impl<'de> Fill<'de> for Body<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            body_entry(self, key, &mut map)?;
        }
        Ok(())
    }
}

/// Reads the value of `key` into `b`.
#[inline(always)]
fn body_entry<'de, A: MapAccess<'de>>(
    b: &mut Body<'de>,
    key: &'de str,
    m: &mut A,
) -> Result<(), A::Error> {
    match key.as_bytes() {
        [c] => match c {
            b'e' => put(&mut b.event, m, "e"),
            b'E' => put(&mut b.event_time, m, "E"),
            b's' => put(&mut b.symbol, m, "s"),
            b'p' => put(&mut b.price, m, "p"),
            b'q' => put(&mut b.qty, m, "q"),
            b'T' => put(&mut b.time, m, "T"),
            b'r' => put(&mut b.funding_rate, m, "r"),
            b't' => put(&mut b.trade_id, m, "t"),
            b'm' => put(&mut b.buyer_is_maker, m, "m"),
            b'u' => put(&mut b.update_id, m, "u"),
            b'a' => put(&mut b.a, m, "a"),
            b'b' => put(&mut b.b, m, "b"),
            b'A' => put(&mut b.ask_qty, m, "A"),
            b'B' => put(&mut b.bid_qty, m, "B"),
            b'k' => put_object(&mut b.k, b.kline.get_or_insert_with(Kline::default), m, "k"),
            b'o' => put_object(&mut b.o, b.order.get_or_insert_with(Order::default), m, "o"),
            _ => ignore(m),
        },
        b"bids" => put(&mut b.b, m, "bids"),
        b"asks" => put(&mut b.a, m, "asks"),
        b"lastUpdateId" => put(&mut b.last_update_id, m, "lastUpdateId"),
        b"result" => {
            if b.result {
                return Err(de::Error::duplicate_field("result"));
            }
            b.result = true;
            ignore(m)
        }
        b"id" => {
            // `"id":null` comes back when Binance could not read the request's id.
            if b.id.is_some() {
                return Err(de::Error::duplicate_field("id"));
            }
            b.id = m.next_value()?;
            Ok(())
        }
        b"code" => put(&mut b.code, m, "code"),
        b"msg" => put(&mut b.msg, m, "msg"),
        _ => ignore(m),
    }
}

impl<'de> Fill<'de> for Kline<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            let m = &mut map;
            match key {
                "t" => put(&mut self.open_time, m, "t")?,
                "s" => put(&mut self.symbol, m, "s")?,
                "i" => put(&mut self.interval, m, "i")?,
                "o" => put(&mut self.open, m, "o")?,
                "h" => put(&mut self.high, m, "h")?,
                "l" => put(&mut self.low, m, "l")?,
                "c" => put(&mut self.close, m, "c")?,
                "v" => put(&mut self.volume, m, "v")?,
                "x" => put(&mut self.closed, m, "x")?,
                _ => ignore(m)?,
            }
        }
        Ok(())
    }
}

impl<'de> Fill<'de> for Order<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            let m = &mut map;
            match key {
                "s" => put(&mut self.symbol, m, "s")?,
                "S" => put(&mut self.side, m, "S")?,
                "p" => put(&mut self.price, m, "p")?,
                "q" => put(&mut self.qty, m, "q")?,
                "T" => put(&mut self.time, m, "T")?,
                _ => ignore(m)?,
            }
        }
        Ok(())
    }
}

fn ignore<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

/// Fills a [`Fill`] from an object in place; any other value is skipped and reported as
/// [`Presence::Other`], so an event Keel ignores cannot fail on a key it never reads.
pub(super) struct InPlace<'b, T>(pub(super) &'b mut T);

impl<'de, T: Fill<'de>> DeserializeSeed<'de> for InPlace<'_, T> {
    type Value = Presence;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Presence, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Fill<'de>> Visitor<'de> for InPlace<'_, T> {
    type Value = Presence;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Presence, A::Error> {
        self.0.fill(map)?;
        Ok(Presence::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Presence, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Presence::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Presence, E> {
        Ok(Presence::Other)
    }
}

/// Book levels, converted to decimals as they are read. A bad number does not fail the JSON
/// pass (the frame may be an event that never looks at it); it is kept and reported if the
/// levels are used.
pub(super) type Levels = Result<Vec<Level>, Box<ParseError>>;

/// A key whose type depends on the event. Anything unexpected is kept as `Other` rather than
/// failing the frame, so an event Keel ignores cannot be mistaken for a broken one.
pub(super) enum Flex<'a> {
    Str(&'a str),
    Num(u64),
    Levels(Levels),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Flex<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FlexVisitor(PhantomData))
    }
}

pub(super) struct FlexVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for FlexVisitor<'a> {
    type Value = Flex<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number or price levels")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Flex::Str(v))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Flex::Num(v))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(LEVELS_CAPACITY);
        let mut bad = None;
        while let Some(RawLevel(price, qty)) = seq.next_element()? {
            if bad.is_none() {
                match level(price, qty) {
                    Ok(l) => out.push(l),
                    Err(e) => bad = Some(Box::new(e)),
                }
            }
        }
        Ok(Flex::Levels(bad.map_or(Ok(out), Err)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Flex::Other)
    }
}

/// `["price", "qty"]`; trailing elements (older payloads had an ignored third) are skipped.
pub(super) struct RawLevel<'a>(&'a str, &'a str);

impl<'de: 'a, 'a> Deserialize<'de> for RawLevel<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawLevel<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[price, quantity]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let price =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let qty = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawLevel(price, qty))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}
