//! Ids as the API documents them: `integer`, `format: int64`, at least 0.
//!
//! Keel stores ids as `u64`, but the document promises int64 (what most clients, and
//! PostgreSQL's `bigint`, can hold), so an id past `i64::MAX` in a query or a body is refused
//! with 422 rather than read. A path id that large names nothing and answers 404 like any
//! other unknown id.

use serde::{Deserialize, Deserializer};

/// Largest id the API takes (`i64::MAX`).
pub const MAX_ID: u64 = i64::MAX as u64;

/// An id, refused past [`MAX_ID`]; for `#[serde(deserialize_with = "…")]`.
///
/// # Errors
/// When the value is not an unsigned integer, or is past [`MAX_ID`].
pub fn int64<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    let id = u64::deserialize(de)?;
    if id > MAX_ID {
        return Err(serde::de::Error::custom(format!("{id} is past the largest id, {MAX_ID}")));
    }
    Ok(id)
}

/// An optional id, as [`int64`].
///
/// # Errors
/// As [`int64`].
pub fn optional_int64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Id(#[serde(deserialize_with = "int64")] u64);
    Ok(Option::<Id>::deserialize(de)?.map(|Id(id)| id))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::optional_int64")]
        account: Option<u64>,
        #[serde(default, deserialize_with = "super::int64")]
        after: u64,
    }

    #[test]
    fn ids_stop_at_the_int64_bound() {
        let read = |json: &str| serde_json::from_str::<Body>(json);
        let max = i64::MAX;
        let ok = read(&format!(r#"{{"account":{max},"after":{max}}}"#)).unwrap();
        assert_eq!((ok.account, ok.after), (Some(super::MAX_ID), super::MAX_ID));
        assert_eq!(read(r#"{"account":null}"#).unwrap().account, None);
        assert_eq!(read("{}").unwrap().after, 0);
        for json in [r#"{"account":9223372036854775808}"#, r#"{"after":18446744073709551615}"#] {
            assert!(read(json).unwrap_err().to_string().contains("largest id"), "{json}");
        }
    }
}
