//! What every strategy shares: reading a trade's price, sizing orders to the venue's rules, and
//! checking parameters into field errors.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::market::{EventKind, MarketEvent};
use crate::trading::InstrumentFilters;
use crate::validation::FieldError;

/// The price of a trade event (exact, and as `f64` for indicators).
pub fn trade_price(event: &MarketEvent) -> Option<(Decimal, f64)> {
    match &event.kind {
        EventKind::Trade { price, .. } => Some((*price, price.to_f64()?)),
        _ => None,
    }
}

/// `qty` floored to the step, if it then meets the minimum quantity and notional at `price`.
pub fn sized(qty: Decimal, price: Decimal, filters: &InstrumentFilters) -> Option<Decimal> {
    let qty = filters.floor_qty(qty);
    let notional = qty.checked_mul(price)?;
    (qty > Decimal::ZERO && qty >= filters.min_qty && notional >= filters.min_notional)
        .then_some(qty)
}

/// The field name of a parameter.
pub fn field(name: &str) -> String {
    format!("strategy.params.{name}")
}

/// A base quantity: positive, on the step, at least the minimum.
pub fn check_qty(
    name: &str,
    qty: Decimal,
    filters: &InstrumentFilters,
    errors: &mut Vec<FieldError>,
) {
    if qty <= Decimal::ZERO {
        errors.push(FieldError::new(field(name), "must be above 0"));
    } else if !filters.qty_on_step(qty) {
        errors.push(FieldError::new(
            field(name),
            format!("must be a multiple of the step size {}", filters.step_size),
        ));
    } else if qty < filters.min_qty {
        errors.push(FieldError::new(
            field(name),
            format!("must be at least the minimum quantity {}", filters.min_qty),
        ));
    } else if filters.max_qty > Decimal::ZERO && qty > filters.max_qty {
        errors.push(FieldError::new(
            field(name),
            format!("must be at most the maximum quantity {}", filters.max_qty),
        ));
    }
}

/// A count or period in `range`.
pub fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    errors: &mut Vec<FieldError>,
) {
    if !range.contains(&value) {
        errors.push(FieldError::new(
            field(name),
            format!("must be between {} and {}", range.start(), range.end()),
        ));
    }
}

/// Parses `params` into `P`, or one field error with serde's message. Parameters are named: an
/// object (absent counts as `{}`), never an array, which serde's derive would otherwise read
/// positionally into the struct.
///
/// # Errors
/// The parameters are not an object, or not a valid `P`.
pub fn parse<P: serde::de::DeserializeOwned>(
    params: &serde_json::Value,
) -> Result<P, Vec<FieldError>> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let params = match params {
        serde_json::Value::Object(_) => params,
        serde_json::Value::Null => &empty,
        _ => {
            let message = "must be an object of the strategy's parameters";
            return Err(vec![FieldError::new("strategy.params", message)]);
        }
    };
    P::deserialize(params).map_err(|e| vec![FieldError::new("strategy.params", e.to_string())])
}

/// Restores `state` into `target` if it was saved with the same parameters.
///
/// # Errors
/// The value is not a saved state of this strategy, or its parameters differ.
pub fn restore<S, P>(
    target: &mut S,
    state: serde_json::Value,
    params: impl Fn(&S) -> &P,
) -> Result<(), serde_json::Error>
where
    S: serde::de::DeserializeOwned,
    P: PartialEq,
{
    let saved: S = serde_json::from_value(state)?;
    if params(&saved) != params(target) {
        return Err(serde::de::Error::custom("saved with different parameters"));
    }
    *target = saved;
    Ok(())
}
