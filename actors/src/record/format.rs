//! The recording file format: append-only, length-prefixed, checksummed records.
//!
//! ```text
//! file    := MAGIC header record*
//! MAGIC   := "KEELREC1"                          (8 bytes)
//! header  := record whose payload is JSON {"version":1,"venue":"sim","symbol":"BTCUSDT"}
//! record  := len:u32 LE | crc32(payload):u32 LE | payload[len]
//! payload := tag:u8 | exchange_ts:varint | received_us:varint | body
//!   tag 1 trade: price:dec qty:dec side:u8 (0 buy, 1 sell) trade_id:varint
//!   tag 2 quote: bid:dec bid_qty:dec ask:dec ask_qty:dec
//!   tag 3 other: the event kind as JSON (candles, depth, liquidations, mark prices, gaps)
//! dec     := scale:u8 | mantissa as a zig-zag LEB128 varint (exact, any scale up to 28)
//! varint  := unsigned LEB128
//! ```
//!
//! The checksum is CRC-32 (IEEE) of the payload. A writer that dies mid-record leaves a *torn
//! tail*: fewer bytes than the length promises, or a final record whose checksum does not match.
//! Readers stop there and report it; writers truncate it away before appending again. A record
//! whose checksum fails with more data after it is corruption, reported as such.

use std::io::{self, Read, Write};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use keel_core::market::{EventKind, MarketEvent, Side, Symbol, VenueId};

/// The first bytes of every recording.
pub const MAGIC: &[u8; 8] = b"KEELREC1";
/// The header's format version.
pub const VERSION: u32 = 1;
/// Longest payload a reader accepts; a longer length is corruption, not data.
pub const MAX_RECORD: u32 = 1 << 20;
/// Bytes before each payload: length and checksum.
const FRAME: usize = 8;

const TAG_TRADE: u8 = 1;
const TAG_QUOTE: u8 = 2;
const TAG_OTHER: u8 = 3;

/// What a recording holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// Where the events came from.
    pub venue: VenueId,
    /// Their instrument.
    pub symbol: Symbol,
}

/// Why a recording cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not a recording, or its header is damaged.
    #[error("not a Keel recording: {0}")]
    NotARecording(String),
    /// A record's checksum does not match its payload.
    #[error("record at byte {offset}: checksum mismatch")]
    Checksum {
        /// Where the record starts.
        offset: u64,
        /// Its length, so a reader may skip it.
        len: u32,
    },
    /// A record that cannot be decoded (bad length, unknown tag, bad field).
    #[error("record at byte {offset}: {reason}")]
    Corrupt {
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error("unreadable: {0}")]
    Io(String),
}

/// Writes one framed record.
///
/// # Errors
/// The writer failed.
pub fn write_record(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_RECORD)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too long"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&crc32fast::hash(payload).to_le_bytes())?;
    out.write_all(payload)
}

/// Writes the magic bytes and the header of a new recording.
///
/// # Errors
/// The writer failed.
pub fn write_header(out: &mut impl Write, venue: VenueId, symbol: &Symbol) -> io::Result<()> {
    out.write_all(MAGIC)?;
    let header = Header { version: VERSION, venue, symbol: symbol.clone() };
    let json = serde_json::to_vec(&header).map_err(io::Error::other)?;
    write_record(out, &json)
}

/// Appends `event`'s payload to `out`.
pub fn encode_event(event: &MarketEvent, out: &mut Vec<u8>) {
    let tag = match event.kind {
        EventKind::Trade { .. } => TAG_TRADE,
        EventKind::Quote { .. } => TAG_QUOTE,
        _ => TAG_OTHER,
    };
    out.push(tag);
    put_varint(out, u128::from(event.exchange_ts));
    put_varint(out, u128::from(event.received_us));
    match &event.kind {
        EventKind::Trade { price, qty, side, trade_id } => {
            put_decimal(out, *price);
            put_decimal(out, *qty);
            out.push(match side {
                Side::Buy => 0,
                Side::Sell => 1,
            });
            put_varint(out, u128::from(*trade_id));
        }
        EventKind::Quote { bid, bid_qty, ask, ask_qty } => {
            for value in [bid, bid_qty, ask, ask_qty] {
                put_decimal(out, *value);
            }
        }
        other => {
            // Serialising a plain enum of decimals, strings and numbers into a Vec cannot fail;
            // an empty body would be reported as corrupt on read rather than lost silently.
            if let Ok(json) = serde_json::to_vec(other) {
                out.extend_from_slice(&json);
            }
        }
    }
}

/// Decodes a payload written by [`encode_event`].
///
/// # Errors
/// What is wrong with it.
pub fn decode_event(payload: &[u8], header: &Header) -> Result<MarketEvent, String> {
    let mut cursor = Cursor { bytes: payload, at: 0 };
    let tag = cursor.byte()?;
    let exchange_ts = cursor.u64()?;
    let received_us = cursor.u64()?;
    let kind = match tag {
        TAG_TRADE => {
            let price = cursor.decimal()?;
            let qty = cursor.decimal()?;
            let side = match cursor.byte()? {
                0 => Side::Buy,
                1 => Side::Sell,
                other => return Err(format!("side {other}")),
            };
            let trade_id = cursor.u64()?;
            EventKind::Trade { price, qty, side, trade_id }
        }
        TAG_QUOTE => EventKind::Quote {
            bid: cursor.decimal()?,
            bid_qty: cursor.decimal()?,
            ask: cursor.decimal()?,
            ask_qty: cursor.decimal()?,
        },
        TAG_OTHER => {
            let rest = &payload[cursor.at..];
            cursor.at = payload.len();
            serde_json::from_slice(rest).map_err(|e| format!("event body: {e}"))?
        }
        other => return Err(format!("unknown tag {other}")),
    };
    if cursor.at != payload.len() {
        return Err(format!("{} bytes left over", payload.len() - cursor.at));
    }
    Ok(MarketEvent {
        venue: header.venue,
        symbol: header.symbol.clone(),
        exchange_ts,
        received_us,
        kind,
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u128) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_decimal(out: &mut Vec<u8>, value: Decimal) {
    out.push(value.scale() as u8);
    let mantissa = value.mantissa();
    // Zig-zag, so small negative numbers stay short too.
    let zigzag = ((mantissa << 1) ^ (mantissa >> 127)) as u128;
    put_varint(out, zigzag);
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self.bytes.get(self.at).ok_or("payload ends early")?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u128, String> {
        let mut value: u128 = 0;
        for shift in (0..128).step_by(7) {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn u64(&mut self) -> Result<u64, String> {
        u64::try_from(self.varint()?).map_err(|_| "number out of range".to_owned())
    }

    fn decimal(&mut self) -> Result<Decimal, String> {
        let scale = u32::from(self.byte()?);
        let zigzag = self.varint()?;
        let mantissa = ((zigzag >> 1) as i128) ^ -((zigzag & 1) as i128);
        Decimal::try_from_i128_with_scale(mantissa, scale).map_err(|e| format!("decimal: {e}"))
    }
}

/// Reads a recording record by record.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    header: Header,
    /// Byte offset of the next record.
    offset: u64,
    /// Records read so far (the header excluded).
    records: u64,
    /// Set once an incomplete last record was found (and skipped).
    torn_tail: bool,
    /// Set after an error nothing can be read past.
    stopped: bool,
    payload: Vec<u8>,
}

/// What [`read_frame`] found.
#[derive(Debug)]
enum Next {
    Payload,
    End,
    Torn,
}

/// Reads the next framed record at `offset` into `payload`. A frame or payload cut short is a
/// torn tail.
fn read_frame(
    input: &mut impl Read,
    offset: u64,
    payload: &mut Vec<u8>,
) -> Result<Next, RecordError> {
    let io = |e: io::Error| RecordError::Io(e.to_string());
    let mut frame = [0u8; FRAME];
    let got = read_some(input, &mut frame).map_err(io)?;
    if got == 0 {
        return Ok(Next::End);
    }
    if got < FRAME {
        return Ok(Next::Torn);
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len == 0 || len > MAX_RECORD {
        return Err(RecordError::Corrupt { offset, reason: format!("length {len} out of range") });
    }
    payload.resize(len as usize, 0);
    if read_some(input, payload).map_err(io)? < len as usize {
        return Ok(Next::Torn);
    }
    if crc32fast::hash(payload) != crc {
        return Err(RecordError::Checksum { offset, len });
    }
    Ok(Next::Payload)
}

/// Bytes a record of `len` payload bytes takes.
fn record_size(len: u32) -> u64 {
    FRAME as u64 + u64::from(len)
}

impl<R: Read> Reader<R> {
    /// Reads the magic bytes and the header.
    ///
    /// # Errors
    /// Not a recording (or an unreadable header).
    pub fn new(mut inner: R) -> Result<Self, RecordError> {
        let mut magic = [0u8; 8];
        let whole =
            read_some(&mut inner, &mut magic).map_err(|e| RecordError::Io(e.to_string()))?;
        if whole < magic.len() || &magic != MAGIC {
            return Err(RecordError::NotARecording("no KEELREC1 magic".into()));
        }
        let mut payload = Vec::new();
        let offset = MAGIC.len() as u64;
        match read_frame(&mut inner, offset, &mut payload) {
            Ok(Next::Payload) => {}
            Ok(Next::End | Next::Torn) => {
                return Err(RecordError::NotARecording("no header".into()));
            }
            Err(err) => return Err(RecordError::NotARecording(format!("header: {err}"))),
        }
        let header: Header = serde_json::from_slice(&payload)
            .map_err(|e| RecordError::NotARecording(format!("header: {e}")))?;
        if header.version != VERSION {
            return Err(RecordError::NotARecording(format!(
                "format version {} (this Keel reads {VERSION})",
                header.version
            )));
        }
        let offset = offset + record_size(payload.len() as u32);
        Ok(Self { inner, header, offset, records: 0, torn_tail: false, stopped: false, payload })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Records read (the header excluded).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Byte offset just past the last record read (whole, or skipped for its checksum).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether reading stopped at an incomplete (torn) last record.
    pub fn torn_tail(&self) -> bool {
        self.torn_tail
    }

    /// The next event; `None` at the end (or at a torn tail, see [`Reader::torn_tail`]). After
    /// a checksum error the reader is positioned past the bad record, so reading may go on; after
    /// a bad length it cannot resynchronise and stops.
    pub fn next_event(&mut self) -> Option<Result<MarketEvent, RecordError>> {
        if self.torn_tail || self.stopped {
            return None;
        }
        let start = self.offset;
        match read_frame(&mut self.inner, start, &mut self.payload) {
            Ok(Next::End) => None,
            Ok(Next::Torn) => {
                self.torn_tail = true;
                None
            }
            Ok(Next::Payload) => {
                self.records += 1;
                self.offset += record_size(self.payload.len() as u32);
                Some(
                    decode_event(&self.payload, &self.header)
                        .map_err(|reason| RecordError::Corrupt { offset: start, reason }),
                )
            }
            Err(err) => {
                self.records += 1;
                match &err {
                    RecordError::Checksum { len, .. } => self.offset += record_size(*len),
                    // Nothing after a bad length (or a read error) can be trusted.
                    _ => self.stopped = true,
                }
                Some(Err(err))
            }
        }
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<MarketEvent, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event()
    }
}

/// Reads until `buf` is full or the input ends; how many bytes were read.
fn read_some(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Writes `events` as one complete recording (tests, tools).
///
/// # Errors
/// The writer failed.
pub fn write_recording<'a>(
    out: &mut impl Write,
    venue: VenueId,
    symbol: &Symbol,
    events: impl IntoIterator<Item = &'a MarketEvent>,
) -> io::Result<u64> {
    write_header(out, venue, symbol)?;
    let mut payload = Vec::with_capacity(64);
    let mut count = 0;
    for event in events {
        payload.clear();
        encode_event(event, &mut payload);
        write_record(out, &payload)?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests;
