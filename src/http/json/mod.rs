//! Keel's JSON body extractors: the one place a request body becomes a typed value.
//!
//! [`Json<T>`] (a required body) and [`OptionalJson<T>`] (no body, or `null`, is `None`) do
//! what `web::Json` does, more strictly, so that the OpenAPI document's word holds:
//!
//! - the body must be `Content-Type: application/json` (or `*/*+json`): else 415;
//! - it is read up to the payload limit (`server.max_body_bytes`): past it, 413;
//! - it must be a JSON **object**: anything else (an array, a string, `true`…) is 422
//!   `VALIDATION_FAILED` on `body`, and text that is not JSON at all is 400 `MALFORMED_JSON`;
//! - structs are read only from objects, at every depth ([`strict`]): serde's derive would take
//!   `[true]` for `{"flatten": true}`;
//! - a field the type does not know (every body type is `#[serde(deny_unknown_fields)]`), a
//!   missing one, or one of the wrong type is 422 `VALIDATION_FAILED`, its `details` naming the
//!   field by its path (`risk.max_position`, `strategy.kind`).
//!
//! Handlers take these instead of `web::Json` (a test in this module keeps it so).

mod strict;

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::{ApiError, FieldError};

/// A required JSON object body, read as `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// An optional JSON object body: none at all, or `null`, is `None`; one that is sent must be a
/// valid `T`, exactly as for [`Json`].
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T> OptionalJson<T> {
    /// The body, if one was sent.
    pub fn into_inner(self) -> Option<T> {
        self.0
    }
}

type Extracted<T> = Pin<Box<dyn Future<Output = Result<T, actix_web::Error>>>>;

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = check_content_type(req);
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            checked?;
            Ok(Json(parse(&body.await?)?))
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = actix_web::Error;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if has_no_body(req) {
            return Box::pin(async { Ok(OptionalJson(None)) });
        }
        let checked = check_content_type(req);
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            checked?;
            let body = body.await?;
            if body.trim_ascii() == b"null" {
                return Ok(OptionalJson(None));
            }
            Ok(OptionalJson(Some(parse(&body)?)))
        })
    }
}

/// Whether a request carries no body at all (no length or a zero one, and not chunked).
fn has_no_body(req: &HttpRequest) -> bool {
    let headers = req.headers();
    match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => !headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// `application/json`, or any `+json` type, as `web::Json` takes.
fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let json = match req.mime_type() {
        Ok(Some(mime)) => {
            mime.subtype() == actix_web::mime::JSON || mime.suffix() == Some(actix_web::mime::JSON)
        }
        _ => false,
    };
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the body must be JSON with Content-Type: application/json",
        ))
    }
}

/// Reads `bytes` as a JSON object of type `T`; see the module doc for the refusals.
///
/// # Errors
/// 400 `MALFORMED_JSON` for text that is not JSON, 422 `VALIDATION_FAILED` for JSON that is not
/// a `T` (naming the field).
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so that text that is not JSON is always 400, whatever else is wrong.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|e| malformed(&e))?;
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::validation(vec![FieldError::new("body", "must be a JSON object")]));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(strict::Strict(&mut de)).map_err(refusal)?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request("MALFORMED_JSON", format!("the body is not valid JSON: {e}"))
}

/// A deserialisation error as the client's answer: 422 on the field at fault, or 400.
fn refusal(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = err.inner();
    if !inner.is_data() {
        return malformed(inner);
    }
    let mut field = field_path(err.path());
    // A missing field is reported at its parent, and so is an unknown one inside a body serde
    // buffers first (an internally tagged enum's): name the field itself.
    let message = inner.to_string();
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix)?.split('`').next());
    if let Some(name) = named
        && field.rsplit(['.', ']']).next() != Some(name)
    {
        field = if field.is_empty() { name.to_owned() } else { format!("{field}.{name}") };
    }
    if field.is_empty() {
        field = "body".to_owned();
    }
    ApiError::validation(vec![FieldError::new(field, message)])
}

/// `risk.max_position`, `items[2].qty`: the path as the API's field errors spell it.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use actix_web::ResponseError;
    use serde::Deserialize;

    use super::parse;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read by serde only
    struct Limits {
        max: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        #[serde(default)]
        limits: Option<Limits>,
    }

    /// Status, code, and the first detail's field.
    fn refused(json: &str) -> (u16, String, String) {
        let err = parse::<Body>(json.as_bytes()).unwrap_err();
        let field = err.details().first().map(|d| d.field.clone()).unwrap_or_default();
        (err.status_code().as_u16(), err.code().to_owned(), field)
    }

    #[test]
    fn unknown_missing_and_mistyped_fields_are_named_by_their_path() {
        let cases = [
            (r#"{"name":"a","nmae":"b"}"#, "nmae"),
            (r#"{"name":"a","limits":{"max":1,"min":0}}"#, "limits.min"),
            (r#"{"limits":{"max":1}}"#, "name"),
            (r#"{"name":"a","limits":{}}"#, "limits.max"),
            (r#"{"name":"a","limits":{"max":"1"}}"#, "limits.max"),
            (r#"{"name":"a","limits":[1]}"#, "limits"),
        ];
        for (json, field) in cases {
            assert_eq!(refused(json), (422, "VALIDATION_FAILED".into(), field.into()), "{json}");
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        for json in [r#"["a"]"#, "true", "null", r#""a""#, "1", " [ ] "] {
            assert_eq!(refused(json), (422, "VALIDATION_FAILED".into(), "body".into()), "{json}");
        }
        for json in ["", "{", "[", "nul", r#"{"name":"a"} {}"#, r#"{"name":"a"}x"#] {
            assert_eq!(refused(json).0, 400, "{json}");
        }
        assert!(parse::<Body>(br#" {"name":"a"} "#).is_ok());
    }

    /// Every `.rs` file under `dir`.
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn handlers_take_the_keel_extractors_not_web_json() {
        let http = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut files = Vec::new();
        sources(&http, &mut files);
        assert!(files.len() > 10, "{files:?}");
        let needle = ["web::", "Json<"].concat();
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            assert!(!source.contains(&needle), "{} takes {needle}", file.display());
        }
    }
}
