//! Field-level validation errors, shared by domain validation and the HTTP error shape.

use serde::Serialize;

/// One field-level problem, listed under `details` in a `VALIDATION_FAILED` answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, dotted for nested ones (`risk.max_position`), or `body`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Implements `Deserialize` for a unit-variant enum from its string names only.
///
/// serde's derived enum deserializer makes serde_json report a number where a variant name was
/// expected (`"side": 7`) as a *syntax* error, which the API would answer as malformed JSON. Read
/// through `deserialize_str`, a wrong type is a data error (422) naming what was expected.
#[macro_export]
macro_rules! deserialize_from_names {
    ($ty:ty { $($name:literal => $variant:expr),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                struct Names;
                impl serde::de::Visitor<'_> for Names {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("one of: " $(, "`", $name, "` ")+))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        match v {
                            $($name => Ok($variant),)+
                            other => Err(E::unknown_variant(other, &[$($name),+])),
                        }
                    }
                }
                de.deserialize_str(Names)
            }
        }
    };
}
