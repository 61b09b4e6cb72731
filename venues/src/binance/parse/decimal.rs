//! Exact decimals from Binance's decimal strings, fast: eight digits at a time where the string
//! allows (SWAR), one at a time up to [`FAST_DIGITS`], `rust_decimal`'s own parser beyond; and
//! the field checks built on them.

use rust_decimal::Decimal;

use super::{EXCERPT_BYTES, ParseError, required};
use keel_core::market::Level;

/// Decimal strings with up to this many digits are read here; longer ones (which Binance does
/// not send) go through `rust_decimal`'s own parser.
const FAST_DIGITS: usize = 19;

/// Reads a decimal as Binance writes them (`"98234.51000000"`), keeping its scale: an optional
/// `-`, digits, at most one `.`, at least one digit. `None` for anything else.
///
/// `rust_decimal`'s parsers also take `+1` and `1_000` (and `from_str` takes `1e5`), so the
/// grammar is checked here, and the mantissa and scale are read directly: exactly what
/// `Decimal::from_str_exact` gives (a test compares them on random strings) in well under
/// its time. Strings of 8 to 16 bytes with at most 7 integer and 8 fractional digits (most
/// of Binance's prices and quantities) are read eight bytes at a time, the rest a digit at a
/// time; past 19 digits `from_str_exact` takes over, which refuses rather than rounds past 28
/// fractional digits.
// Inlined into its callers: the call and the `Option<Decimal>` round trip cost a tenth of it.
#[inline(always)]
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let (negative, body) = match s.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        bytes => (false, bytes),
    };
    let (mantissa, scale) = match swar_decimal(body).or_else(|| scalar_decimal(body)) {
        Some(parts) => parts,
        None => return slow_decimal(body, s),
    };
    Some(Decimal::from_parts(mantissa as u32, (mantissa >> 32) as u32, 0, negative, scale))
}

/// `'0'` in every byte.
const ZEROS: u64 = 0x3030_3030_3030_3030;
/// Powers of ten up to the eight fractional digits [`swar_decimal`] reads.
const POW10: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// Zero in every byte that is an ASCII digit, non-zero in the first byte that is not.
fn non_digits(v: u64) -> u64 {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    // A digit's high nibble is 3, and stays 3 when 6 is added to it.
    let nibbles =
        (v & HIGH_NIBBLES) | ((v.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES) >> 4);
    nibbles ^ 0x3333_3333_3333_3333
}

/// The number written by eight digit values (0 to 9, one a byte, the first in the low byte):
/// pairs, then fours, then all eight.
fn eight_digits(d: u64) -> u64 {
    let d = (d.wrapping_mul(10) + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    let d = (d.wrapping_mul(100) + (d >> 16)) & 0x0000_FFFF_0000_FFFF;
    (d.wrapping_mul(10_000) + (d >> 32)) & 0xFFFF_FFFF
}

/// `int.frac` with 8 to 16 bytes, at most 7 integer and 8 fractional digits, as (mantissa,
/// scale); `None` for anything else, valid or not, which the scalar reader then handles.
#[inline(always)]
fn swar_decimal(body: &[u8]) -> Option<(u64, u32)> {
    if body.len() > 16 {
        return None;
    }
    let head = u64::from_le_bytes(*body.first_chunk::<8>()?);
    let tail = u64::from_le_bytes(*body.last_chunk::<8>()?);
    let int_len = (non_digits(head).trailing_zeros() / 8) as usize;
    if int_len >= 8 || body[int_len] != b'.' {
        return None;
    }
    let frac_len = body.len() - int_len - 1;
    if frac_len > 8 {
        return None;
    }
    // The integer digits moved to the top bytes (subtracting '0' from the point and what
    // follows borrows, but only into bytes the shift drops); zero bytes below lead.
    let int = match int_len {
        0 => 0,
        n => eight_digits(head.wrapping_sub(ZEROS) << (8 * (8 - n))),
    };
    // The fraction is the top `frac_len` bytes of `tail`; the bytes below become '0's.
    let keep = match frac_len {
        0 => 0,
        n => u64::MAX << (8 * (8 - n)),
    };
    let frac = (tail & keep) | (ZEROS & !keep);
    if non_digits(frac) != 0 {
        return None;
    }
    let mantissa = int * POW10[frac_len] + eight_digits(frac - ZEROS);
    Some((mantissa, frac_len as u32))
}

/// Up to [`FAST_DIGITS`] digits, one at a time, as (mantissa, scale); `None` if the string is
/// not plain or has more digits.
fn scalar_decimal(body: &[u8]) -> Option<(u64, u32)> {
    if body.len() > FAST_DIGITS + 1 {
        return None;
    }
    // Sums wrap harmlessly past FAST_DIGITS digits: that case is refused below.
    let mut mantissa: u64 = 0;
    let mut int_len = body.len();
    for (i, &b) in body.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            int_len = i;
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(digit));
    }
    let frac = match body.get(int_len..) {
        Some([b'.', frac @ ..]) => frac,
        Some([]) => &[],
        _ => return None,
    };
    for &b in frac {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(digit));
    }
    let digits = int_len + frac.len();
    // At most FAST_DIGITS fractional digits: within Decimal's 28.
    (1..=FAST_DIGITS).contains(&digits).then_some((mantissa, frac.len() as u32))
}

/// Not read above: more than [`FAST_DIGITS`] digits, or not a plain decimal at all. The
/// grammar is checked here, the value comes from `rust_decimal`.
#[cold]
fn slow_decimal(body: &[u8], s: &str) -> Option<Decimal> {
    let digits = body.iter().filter(|b| b.is_ascii_digit()).count();
    let points = body.iter().filter(|&&b| b == b'.').count();
    let plain = digits > FAST_DIGITS && points <= 1 && digits + points == body.len();
    plain.then(|| Decimal::from_str_exact(s).ok()).flatten()
}

/// A required decimal above zero (prices, trade quantities).
pub(super) fn positive(field: &'static str, s: Option<&str>) -> Result<Decimal, ParseError> {
    let s = required(s, field)?;
    match parse_decimal(s) {
        Some(d) if d.is_sign_positive() && !d.is_zero() => Ok(d),
        Some(d) => Err(ParseError::BadValue { field, value: d.to_string() }),
        None => Err(ParseError::BadNumber { field, value: excerpt(s) }),
    }
}

/// A required decimal of zero or more (volumes, depth quantities: zero removes a level).
pub(super) fn non_negative(field: &'static str, s: Option<&str>) -> Result<Decimal, ParseError> {
    let s = required(s, field)?;
    match parse_decimal(s) {
        Some(d) if d.is_sign_positive() || d.is_zero() => Ok(d),
        Some(d) => Err(ParseError::BadValue { field, value: d.to_string() }),
        None => Err(ParseError::BadNumber { field, value: excerpt(s) }),
    }
}

/// One book level: a positive price, a quantity of zero or more.
pub(super) fn level(price: &str, qty: &str) -> Result<Level, ParseError> {
    Ok((positive("level price", Some(price))?, non_negative("level qty", Some(qty))?))
}

/// The start of `s`, cut on a character boundary, for an error message.
pub(super) fn excerpt(s: &str) -> String {
    let mut end = s.len().min(EXCERPT_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
