//! Text as Postgres stores it. `text` and `jsonb` refuse the character U+0000 (NUL): a value
//! holding one makes the whole statement fail (for a bot, its flush, and the bot stops). What
//! comes from outside (a venue's error message, a strategy's log line, a strategy parameter)
//! can hold one, so every string written to Postgres passes through here first: each NUL is
//! replaced with U+FFFD (the replacement character), visibly, rather than the write failing or
//! the text being cut. Names the API validates refuse control characters at input already.

use std::borrow::Cow;

/// What a NUL becomes in Postgres.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// `text` with every NUL replaced by [`NUL_REPLACEMENT`] (borrowed when it has none).
pub fn pg_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Replaces every NUL in `value`'s strings and object keys with [`NUL_REPLACEMENT`], in place.
pub fn scrub_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) => {
            if let Cow::Owned(clean) = pg_text(text) {
                *text = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(fields) => {
            if fields.keys().any(|key| key.contains('\0')) {
                let taken = std::mem::take(fields);
                *fields = taken.into_iter().map(|(k, v)| (pg_text(&k).into_owned(), v)).collect();
            }
            fields.values_mut().for_each(scrub_json);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_is_replaced_everywhere_and_nothing_else_changes() {
        assert!(matches!(pg_text("plain"), Cow::Borrowed("plain")));
        assert_eq!(pg_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        let mut value = json!({"msg": "venue said \0", "k\0": ["x\0", 1, null, {"n": "\0"}]});
        scrub_json(&mut value);
        assert_eq!(
            value,
            json!({"msg": "venue said \u{FFFD}", "k\u{FFFD}": ["x\u{FFFD}", 1, null, {"n": "\u{FFFD}"}]})
        );
        let mut clean = json!({"a": "b", "c": [1, "d"]});
        let before = clean.clone();
        scrub_json(&mut clean);
        assert_eq!(clean, before);
    }
}
