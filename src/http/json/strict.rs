//! A deserializer wrapper that reads a struct only from a JSON object, at every depth.
//!
//! serde's derived `Deserialize` for a struct accepts a sequence as well as a map (`[true]` is a
//! `KillBody { flatten: true }`, and a positional array is a whole `NewBot`), and serde_json's
//! `deserialize_struct` offers both. The OpenAPI document says "object" for every such type, so
//! [`Strict`] asks its inner deserializer for a *map* wherever a struct (or a struct variant) is
//! wanted: a sequence there is then refused as "invalid type: sequence, expected struct …".
//! Everything else is forwarded untouched, and every nested deserializer, sequence, map and enum
//! is wrapped again, so the rule holds for nested bodies (`risk`, `paper`, `bracket`…) too.
//!
//! Types that deserialize through `deserialize_any` (`serde_json::Value`, internally tagged
//! enums, `#[serde(flatten)]`) are not structs to serde and are left as they are.
//!
//! One more rule of the document: a decimal (`rust_decimal::Decimal`) is a JSON *string*
//! (`"0.001"`, as exchanges send them). Its deserializer also takes a JSON number, which would
//! go through a float; [`Strict`] refuses numbers where that deserializer is the one asking.

use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Unexpected, VariantAccess,
    Visitor,
};

/// What `rust_decimal`'s visitor says it expects: how a decimal is recognised.
const DECIMAL_EXPECTING: &str = "a Decimal type representing a fixed-point number";
/// What a decimal must be instead.
const DECIMAL_STRING: &str = "a decimal string such as \"0.001\"";

/// A deserializer that reads structs only from maps (see the module doc).
#[derive(Debug)]
pub struct Strict<D>(pub D);

/// A visitor whose nested access is wrapped in [`Strict`].
struct StrictVisitor<V>(V);

/// A seed that deserializes through [`Strict`].
struct StrictSeed<S>(S);

/// A struct variant's fields, read as a map.
struct StructSeed<V>(V);

/// Forwards `deserialize_*` methods that take no extra arguments.
macro_rules! forward {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(StrictVisitor(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, StrictVisitor(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, StrictVisitor(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, StrictVisitor(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, StrictVisitor(visitor))
    }

    /// The point of the wrapper: a struct is read from a map, never from a sequence.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(StrictVisitor(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, StrictVisitor(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Whether a visitor is `rust_decimal`'s (which takes numbers as well as strings).
fn is_decimal<'de, V: Visitor<'de>>(visitor: &V) -> bool {
    struct Expecting<'a, V>(&'a V);
    impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
    }
    Expecting(visitor).to_string() == DECIMAL_EXPECTING
}

/// Forwards `visit_*` methods for numbers, refusing them for a decimal.
macro_rules! visit_number {
    ($($method:ident($ty:ty) => $unexpected:expr;)*) => {$(
        fn $method<E: serde::de::Error>(self, v: $ty) -> Result<V::Value, E> {
            if is_decimal(&self.0) {
                #[allow(clippy::cast_precision_loss, clippy::cast_lossless)]
                return Err(E::invalid_type($unexpected(v), &DECIMAL_STRING));
            }
            self.0.$method(v)
        }
    )*};
}

/// Forwards `visit_*` methods that take one plain value.
macro_rules! visit {
    ($($method:ident($ty:ty))*) => {$(
        fn $method<E: serde::de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.0.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for StrictVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    visit_number! {
        visit_i8(i8) => |v| Unexpected::Signed(i64::from(v));
        visit_i16(i16) => |v| Unexpected::Signed(i64::from(v));
        visit_i32(i32) => |v| Unexpected::Signed(i64::from(v));
        visit_i64(i64) => Unexpected::Signed;
        visit_i128(i128) => |_| Unexpected::Other("integer");
        visit_u8(u8) => |v| Unexpected::Unsigned(u64::from(v));
        visit_u16(u16) => |v| Unexpected::Unsigned(u64::from(v));
        visit_u32(u32) => |v| Unexpected::Unsigned(u64::from(v));
        visit_u64(u64) => Unexpected::Unsigned;
        visit_u128(u128) => |_| Unexpected::Other("integer");
        visit_f32(f32) => |v| Unexpected::Float(f64::from(v));
        visit_f64(f64) => Unexpected::Float;
    }

    visit! {
        visit_bool(bool) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Strict(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Strict(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(Strict(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for StructSeed<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_map(StrictVisitor(self.0))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(StrictSeed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Strict<A> {
    type Error = A::Error;
    type Variant = Strict<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(StrictSeed(seed))?;
        Ok((value, Strict(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(StrictSeed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, StrictVisitor(visitor))
    }

    /// Like a struct: the variant's fields are read from a map only.
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.newtype_variant_seed(StructSeed(visitor))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::Strict;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Shape {
        Square { side: u32 },
        Dot,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        maybe: Option<Inner>,
        #[serde(default)]
        shape: Option<Shape>,
    }

    fn strict<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        let value = T::deserialize(Strict(&mut de))?;
        de.end()?;
        Ok(value)
    }

    #[test]
    fn objects_read_as_before() {
        let json =
            r#"{"inner":{"a":1},"list":[{"a":2}],"maybe":{"a":3},"shape":{"Square":{"side":4}}}"#;
        let read: Outer = strict(json).unwrap();
        assert_eq!(read, serde_json::from_str::<Outer>(json).unwrap());
        let dot: Outer = strict(r#"{"inner":{"a":1},"shape":"Dot"}"#).unwrap();
        assert_eq!(dot.shape, Some(Shape::Dot));
    }

    #[test]
    fn a_decimal_is_read_from_a_string_only() {
        #[derive(Debug, Deserialize)]
        struct Price {
            price: rust_decimal::Decimal,
            #[serde(default)]
            count: u32,
        }
        let read: Price = strict(r#"{"price":"1.50","count":3}"#).unwrap();
        assert_eq!((read.price.to_string().as_str(), read.count), ("1.50", 3));
        for json in [r#"{"price":1.5}"#, r#"{"price":2}"#, r#"{"price":-2}"#] {
            assert!(serde_json::from_str::<Price>(json).is_ok(), "{json}");
            let err = strict::<Price>(json).unwrap_err();
            assert!(err.to_string().contains("decimal string"), "{json}: {err}");
        }
    }

    #[test]
    fn a_sequence_is_refused_wherever_a_struct_is_wanted() {
        for json in [
            r#"[{"a":1}]"#,
            r#"{"inner":[1]}"#,
            r#"{"inner":{"a":1},"list":[[2]]}"#,
            r#"{"inner":{"a":1},"maybe":[3]}"#,
            r#"{"inner":{"a":1},"shape":{"Square":[4]}}"#,
        ] {
            // serde's own derive takes every one of these.
            assert!(serde_json::from_str::<Outer>(json).is_ok(), "{json}");
            let err = strict::<Outer>(json).unwrap_err();
            assert!(err.is_data() && err.to_string().contains("sequence"), "{json}: {err}");
        }
    }
}
