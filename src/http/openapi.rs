//! The OpenAPI document of `/api/v1`, served at `GET /api/v1/openapi.json`.
//!
//! It is generated from the code: each handler's `#[utoipa::path]` says its own answers and the
//! request and response types derive `ToSchema`. What every route shares is not repeated on each
//! handler but added here from the route table ([`super::api_routes`]), so it cannot drift from
//! what the middleware and extractors really do:
//!
//! - every route: 429 `RATE_LIMITED` and 503 `OVERLOADED` (the protection middleware, with
//!   `Retry-After`), 500 `INTERNAL`, 400 `URL_TOO_LONG` and 431 `HEADERS_TOO_LARGE`
//!   (`http::limits`);
//! - [`Access::User`] routes: the bearer scheme and 401 `UNAUTHORIZED` (with `WWW-Authenticate`);
//! - a JSON body: 400 (not JSON), 408 (the body stalled), 413, 415 (not `application/json`, or
//!   compressed) and 422 (wrong fields); another body: 400, 408, 413 and 415 (compressed);
//! - path parameters: 404 when one does not parse; query parameters: 422.
//!
//! A handler's own entry for a status wins over the shared one. Operation ids are the handler's
//! name after its tag (`bots_create`). The tests below fail when a route
//! is missing from the document, when a `$ref` does not resolve, or when an error answer is not the
//! one JSON error shape.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::Method;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};

use keel_actors::bot::Control;
use keel_core::market::Interval;

use super::error::ErrorResponse;
use super::{
    Access, accounts, auth, backtests, bots, indicators, markets, notifications, strategies,
    trading, user_risk,
};

/// Name of the bearer security scheme in the document.
const BEARER: &str = "bearer";
/// Content type of every JSON body.
const JSON: &str = "application/json";

/// The `/api/v1` document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Keel API",
        description = "Keel's HTTP API: accounts, exchange credentials, market data, bots, \
            trading and backtests. Every error answers `{\"error\": {...}}` (`ErrorResponse`). \
            The WebSocket API (`GET /api/v1/ws`) is described in docs/WEBSOCKET.md."
    ),
    servers((url = "/api/v1")),
    paths(
        document,
        auth::register,
        auth::login,
        auth::refresh,
        auth::logout,
        auth::logout_all,
        auth::me,
        auth::delete_me,
        auth::change_password,
        user_risk::get,
        user_risk::put,
        accounts::create,
        accounts::list,
        accounts::delete,
        accounts::balances,
        markets::venues,
        markets::ticker,
        markets::candles,
        bots::create,
        bots::list,
        bots::get,
        bots::update,
        bots::delete,
        bots::control,
        trading::close_position,
        trading::orders,
        trading::place,
        trading::cancel,
        trading::fills,
        trading::position,
        trading::performance,
        trading::events,
        indicators::indicators,
        trading::kill_switch,
        trading::portfolio,
        backtests::upload,
        backtests::create,
        backtests::list,
        backtests::get,
        backtests::cancel,
        strategies::upload,
        strategies::list,
        strategies::get,
        strategies::delete,
        notifications::create,
        notifications::list,
        notifications::delete,
        notifications::deliveries,
    ),
    // Types used only as parameters are not collected from the paths: list them here.
    components(schemas(ErrorResponse, Control, Interval)),
    modifiers(&Shared),
    tags(
        (name = "auth", description = "Accounts and sessions."),
        (name = "exchange-accounts", description = "Venue credentials, kept in the vault."),
        (name = "markets", description = "Market state from the feeds."),
        (name = "bots", description = "Bot definitions and their lifecycle."),
        (name = "trading", description = "A bot's orders, fills, journal and figures."),
        (name = "backtests", description = "Backtests as jobs."),
        (name = "strategies", description = "Strategy kinds: built-in and owners' modules."),
        (name = "notifications", description = "An owner's webhooks and Telegram chats."),
        (name = "meta", description = "This document."),
    )
)]
pub struct ApiDoc;

/// The document, built once.
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document of `/api/v1`.", body = Object)))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(&*DOCUMENT)
}

/// Adds what every route shares; see the module doc.
struct Shared;

/// A reusable error answer: its component name, status and description.
struct SharedError {
    name: &'static str,
    status: u16,
    description: &'static str,
}

const BAD_REQUEST: SharedError = SharedError {
    name: "BadRequest",
    status: 400,
    description: "The body cannot be read or is not JSON (`MALFORMED_JSON`, `BAD_REQUEST`), or \
        the URL is over `server.max_url_bytes` (`URL_TOO_LONG`).",
};
const REQUEST_TIMEOUT: SharedError = SharedError {
    name: "RequestTimeout",
    status: 408,
    description: "The body stalled or took too long (`REQUEST_TIMEOUT`, \
        `server.body_idle_timeout_ms`, `server.body_timeout_secs`); the connection is closed.",
};
const HEADERS_TOO_LARGE: SharedError = SharedError {
    name: "HeadersTooLarge",
    status: 431,
    description: "The request headers are over `server.max_header_bytes` (`HEADERS_TOO_LARGE`).",
};
const UNAUTHORIZED: SharedError = SharedError {
    name: "Unauthorized",
    status: 401,
    description: "No bearer token, or one that is invalid, expired or revoked, or whose account \
        is gone (`UNAUTHORIZED`).",
};
const PATH_NOT_FOUND: SharedError = SharedError {
    name: "PathNotFound",
    status: 404,
    description: "A path parameter does not parse (`NOT_FOUND`).",
};
const TOO_LARGE: SharedError = SharedError {
    name: "PayloadTooLarge",
    status: 413,
    description: "The body is over the size limit (`PAYLOAD_TOO_LARGE`).",
};
const UNSUPPORTED: SharedError = SharedError {
    name: "UnsupportedMediaType",
    status: 415,
    description: "The body is not `Content-Type: application/json` (`UNSUPPORTED_MEDIA_TYPE`), or \
        it is compressed: any `Content-Encoding` (`UNSUPPORTED_CONTENT_ENCODING`).",
};
const INVALID: SharedError = SharedError {
    name: "ValidationFailed",
    status: 422,
    description: "A field is missing, unknown or of the wrong type (`VALIDATION_FAILED`, with \
        `details`).",
};
const RATE_LIMITED: SharedError = SharedError {
    name: "RateLimited",
    status: 429,
    description: "Over the caller's request budget (`RATE_LIMITED`).",
};
const INTERNAL: SharedError = SharedError {
    name: "Internal",
    status: 500,
    description: "Something failed inside Keel (`INTERNAL`); the body says nothing more.",
};
const UNAVAILABLE: SharedError = SharedError {
    name: "Unavailable",
    status: 503,
    description: "Too many requests in flight or an actor's mailbox is full (`OVERLOADED`), or \
        an actor is restarting (`UNAVAILABLE`).",
};

/// Every shared error answer.
const SHARED: [SharedError; 11] = [
    BAD_REQUEST,
    REQUEST_TIMEOUT,
    HEADERS_TOO_LARGE,
    UNAUTHORIZED,
    PATH_NOT_FOUND,
    TOO_LARGE,
    UNSUPPORTED,
    INVALID,
    RATE_LIMITED,
    INTERNAL,
    UNAVAILABLE,
];

impl SharedError {
    fn response(&self) -> Response {
        let mut response = ResponseBuilder::new().description(self.description).content(
            JSON,
            ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorResponse"))).build(),
        );
        if matches!(self.status, 429 | 503) {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(u64::schema()))
                    .description(Some("Seconds to wait before retrying."))
                    .build(),
            );
        }
        if self.status == 401 {
            response = response.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(Some(String::schema()))
                    .description(Some("`Bearer`."))
                    .build(),
            );
        }
        response.build()
    }

    /// Adds this answer to `operation` unless the handler documents the status itself.
    fn add_to(&self, operation: &mut Operation) {
        operation
            .responses
            .responses
            .entry(self.status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(self.name)));
    }
}

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
        for shared in &SHARED {
            components.responses.insert(shared.name.to_owned(), RefOr::T(shared.response()));
        }
        for name in CLOSED_ONE_OFS {
            close_variants(components, name);
        }
        for route in super::api_routes() {
            // A route without an operation is left alone: the tests below name it.
            let Some(item) = doc.paths.paths.get_mut(route.path) else { continue };
            let Some(operation) = operation_mut(item, &route.method) else { continue };
            add_shared(operation, route.access);
            qualify_operation_id(operation);
        }
    }
}

/// Request bodies that are internally tagged enums with `#[serde(deny_unknown_fields)]`: utoipa
/// does not carry the attribute to their variants' schemas, so it is added here (a test below
/// finds any body schema that still allows additional properties).
const CLOSED_ONE_OFS: [&str; 1] = ["NewOrder"];

/// Sets `additionalProperties: false` on every object variant of the `oneOf` component `name`.
fn close_variants(components: &mut utoipa::openapi::Components, name: &str) {
    use utoipa::openapi::schema::{AdditionalProperties, Schema};
    let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(name) else {
        return;
    };
    for variant in &mut one_of.items {
        if let RefOr::T(Schema::Object(object)) = variant {
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
    }
}

fn add_shared(operation: &mut Operation, access: Access) {
    if access == Access::User {
        operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        UNAUTHORIZED.add_to(operation);
    }
    let body_types: Vec<String> = match &operation.request_body {
        Some(RefOr::T(body)) => body.content.keys().cloned().collect(),
        _ => Vec::new(),
    };
    if body_types.iter().any(|t| t == JSON) {
        for shared in [&TOO_LARGE, &UNSUPPORTED, &INVALID, &REQUEST_TIMEOUT] {
            shared.add_to(operation);
        }
    } else if !body_types.is_empty() {
        for shared in [&TOO_LARGE, &UNSUPPORTED, &REQUEST_TIMEOUT] {
            shared.add_to(operation);
        }
    }
    // Any request: an over-long URL (400) or oversized headers (431), `http::limits`.
    BAD_REQUEST.add_to(operation);
    HEADERS_TOO_LARGE.add_to(operation);
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn| {
        parameters.iter().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == place))
    };
    let (path, query) = (has(ParameterIn::Path), has(ParameterIn::Query));
    if path {
        PATH_NOT_FOUND.add_to(operation);
    }
    if query {
        INVALID.add_to(operation);
    }
    for shared in [&RATE_LIMITED, &INTERNAL, &UNAVAILABLE] {
        shared.add_to(operation);
    }
}

/// utoipa names an operation after its handler, and several modules have a `create` or a `list`:
/// prefix the tag, so ids are unique (`bots_create`, `exchange_accounts_create`).
fn qualify_operation_id(operation: &mut Operation) {
    let tag = operation.tags.as_ref().and_then(|tags| tags.first()).map(|t| t.replace('-', "_"));
    if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut()) {
        *id = format!("{tag}_{id}");
    }
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &Method) -> Option<&'a mut Operation> {
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::http::{API_PREFIX, api_routes};

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    /// Every `(method, path)` the document has an operation for.
    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut found = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                if let Some(operation) = item.get(method) {
                    found.push((method.to_owned(), path.clone(), operation));
                }
            }
        }
        found
    }

    #[test]
    fn the_document_has_exactly_the_route_tables_operations() {
        let doc = document();
        let documented: BTreeSet<(String, String)> =
            operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
        let routes: BTreeSet<(String, String)> = api_routes()
            .iter()
            .map(|r| (r.method.as_str().to_lowercase(), r.path.to_owned()))
            .collect();
        let missing: Vec<_> = routes.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routes).collect();
        assert!(missing.is_empty(), "routes missing from the document: {missing:?}");
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
        assert_eq!(doc["servers"][0]["url"], API_PREFIX);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    }

    #[test]
    fn operation_ids_are_unique_and_name_their_handler() {
        let doc = document();
        let ids: Vec<&str> = operations(&doc)
            .into_iter()
            .map(|(_, _, op)| op["operationId"].as_str().unwrap())
            .collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "duplicate operation ids: {ids:?}");
        assert!(unique.contains("bots_create") && unique.contains("exchange_accounts_create"));
    }

    #[test]
    fn user_routes_need_the_bearer_token_and_public_ones_do_not() {
        let doc = document();
        for route in api_routes() {
            let method = route.method.as_str().to_lowercase();
            let operation = &doc["paths"][route.path][&method];
            let secured = operation["security"][0].get(BEARER).is_some();
            let answers_401 = operation["responses"].get("401").is_some();
            match route.access {
                Access::User => assert!(secured && answers_401, "{route:?} is not secured"),
                Access::Public => assert!(!secured, "{route:?} asks for a token"),
            }
        }
        assert_eq!(doc["components"]["securitySchemes"][BEARER]["scheme"], "bearer");
    }

    /// Every `$ref` string anywhere in `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => out.push(target),
                        _ => refs(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_inside_the_document() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "suspiciously few $refs: {}", found.len());
        let broken: BTreeSet<&str> = found
            .into_iter()
            .filter(|r| r.strip_prefix('#').and_then(|pointer| doc.pointer(pointer)).is_none())
            .collect();
        assert!(broken.is_empty(), "unresolved $refs: {broken:?}");
    }

    /// The response object of a status, following a `$ref` to `components.responses`.
    fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
        match response.get("$ref").and_then(Value::as_str) {
            Some(target) => doc.pointer(&target[1..]).unwrap(),
            None => response,
        }
    }

    #[test]
    fn every_error_answer_is_the_json_error_shape_and_every_route_can_be_throttled() {
        let doc = document();
        for (method, path, operation) in operations(&doc) {
            let responses = operation["responses"].as_object().unwrap();
            for status in ["429", "500", "503"] {
                assert!(responses.contains_key(status), "{method} {path} lacks {status}");
            }
            for (status, response) in responses {
                let response = resolve(&doc, response);
                if status.as_str() < "400" {
                    continue;
                }
                let schema = &response["content"][JSON]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/ErrorResponse",
                    "{method} {path} {status} is not the error shape"
                );
                if status == "429" || status == "503" {
                    assert!(
                        response["headers"].get("Retry-After").is_some(),
                        "{method} {path} {status} has no Retry-After"
                    );
                }
            }
        }
    }

    /// A query parameter's schema, by operation and name.
    fn query_schema<'a>(doc: &'a Value, path: &str, name: &str) -> &'a Value {
        let parameters = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        &parameters.iter().find(|p| p["name"] == name).unwrap()["schema"]
    }

    #[test]
    fn documented_bounds_are_the_ones_the_handlers_check() {
        let doc = document();
        let page = query_schema(&doc, "/bots/{id}/orders", "limit");
        assert_eq!(page["maximum"], keel_actors::bot::repo::MAX_PAGE);
        let candles = query_schema(&doc, "/markets/{venue}/{symbol}/candles", "limit");
        assert_eq!(candles["maximum"], crate::http::markets::MAX_CANDLES);
    }

    /// utoipa keys components by type name, so two body types of one name would make one
    /// operation document the other's body (registration once documented the exchange-account
    /// body this way). Every JSON request body's schema must be the one its handler reads.
    #[test]
    fn each_request_body_refers_to_its_own_schema() {
        let doc = document();
        let body = |path: &str| {
            doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        let schemas = &doc["components"]["schemas"];
        let register = body("/auth/register");
        assert!(schemas[&register]["properties"]["invite"].is_object(), "{register}");
        let account = body("/exchange-accounts");
        assert!(schemas[&account]["properties"]["api_key"].is_object(), "{account}");
        assert_ne!(register, account);
    }

    #[test]
    fn documented_body_rules_are_the_ones_the_handlers_check() {
        use keel_actors::identity::PasswordPolicy;
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let password = &schemas["Credentials"]["properties"]["password"];
        assert_eq!(password["minLength"], PasswordPolicy::MIN_CHARS);
        assert_eq!(password["maxLength"], PasswordPolicy::MAX_CHARS);
        // One rule for every owner-chosen label: the length as sent, not all blank, no control
        // characters (`char::is_control`), blanks as `char::is_whitespace` counts them.
        let label = &schemas["NewAccount"]["properties"]["label"];
        for other in
            [&schemas["NewBot"]["properties"]["name"], &schemas["BotPatch"]["properties"]["name"]]
        {
            assert_eq!(other["pattern"], label["pattern"]);
            assert_eq!(other["maxLength"], label["maxLength"]);
        }
        assert_eq!(label["maxLength"], 64);
        let pattern = label["pattern"].as_str().unwrap();
        for c in ['\u{0}', '\u{1f}', '\u{7f}', '\u{9f}'] {
            assert!(c.is_control() && pattern.contains(&format!("{:X}", u32::from(c))), "{c:?}");
        }
        let blanks: Vec<char> = (0..=0x3000u32)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace() && !c.is_control())
            .collect();
        for c in blanks {
            let code = format!("{:04X}", u32::from(c));
            let listed = pattern.contains(&code)
                || (0x2000..=0x200A).contains(&u32::from(c))
                || c == ' '
                || c == '\u{a0}';
            assert!(listed, "blank U+{code} is not in the label pattern");
        }
        // A tag is a u32, not an int32.
        let variants = schemas["NewOrder"]["oneOf"].as_array().unwrap();
        for variant in variants {
            let tag = &variant["properties"]["tag"];
            assert_eq!(
                (tag["format"].as_str(), tag["maximum"].as_u64()),
                (Some("int64"), Some(u64::from(u32::MAX))),
                "{tag}"
            );
        }
    }

    #[test]
    fn bodies_and_parameters_bring_their_extractor_errors() {
        let doc = document();
        let create = &doc["paths"]["/bots"]["post"]["responses"];
        for status in ["400", "413", "415", "422"] {
            assert!(create.get(status).is_some(), "POST /bots lacks {status}");
        }
        let get = &doc["paths"]["/bots/{id}"]["get"]["responses"];
        assert!(get.get("404").is_some() && get.get("415").is_none());
        // The kill switch's body is optional, but a bad one is refused like any other.
        let kill = &doc["paths"]["/kill-switch"]["post"];
        assert_ne!(kill["requestBody"]["required"], true);
        assert!(kill["responses"].get("422").is_some() && kill["responses"].get("415").is_some());
    }

    /// Every object schema `schema` is made of, following `$ref`s (each component once).
    fn object_schemas<'a>(
        doc: &'a Value,
        schema: &'a Value,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<(String, &'a Value)>,
    ) {
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            if seen.insert(target.to_owned()) {
                let resolved = doc.pointer(&target[1..]).unwrap();
                out.push((target.to_owned(), resolved));
                object_schemas(doc, resolved, seen, out);
            }
            return;
        }
        let is_object = schema.get("properties").is_some()
            || schema["type"] == "object"
            || schema["type"].as_array().is_some_and(|t| t.contains(&"object".into()));
        if is_object {
            out.push(("(inline)".to_owned(), schema));
        }
        for key in ["oneOf", "anyOf", "allOf"] {
            for part in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
                object_schemas(doc, part, seen, out);
            }
        }
        for (_, property) in
            schema.get("properties").and_then(Value::as_object).into_iter().flatten()
        {
            object_schemas(doc, property, seen, out);
        }
        if let Some(items) = schema.get("items") {
            object_schemas(doc, items, seen, out);
        }
    }

    #[test]
    fn every_request_body_schema_refuses_additional_properties_at_every_depth() {
        let doc = document();
        let mut checked = 0;
        for (method, path, operation) in operations(&doc) {
            let Some(content) = operation["requestBody"]["content"].get(JSON) else { continue };
            let mut found = Vec::new();
            object_schemas(&doc, &content["schema"], &mut BTreeSet::new(), &mut found);
            assert!(!found.is_empty(), "{method} {path}: its JSON body is no object");
            for (name, schema) in found {
                if schema.get("properties").is_none() && schema["type"] != "object" {
                    continue; // a oneOf or allOf holder: its parts were checked
                }
                assert_eq!(
                    schema["additionalProperties"],
                    Value::Bool(false),
                    "{method} {path}: {name} allows additional properties: {schema}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} body schemas checked");
    }

    #[test]
    fn a_json_body_is_an_object_or_for_the_kill_switch_null() {
        let doc = document();
        for (method, path, operation) in operations(&doc) {
            let Some(content) = operation["requestBody"]["content"].get(JSON) else { continue };
            let schema = &content["schema"];
            let parts = match schema.get("oneOf").and_then(Value::as_array) {
                Some(parts) if path == "/kill-switch" => {
                    assert!(parts.iter().any(|p| p["type"] == "null"), "{schema}");
                    assert_ne!(operation["requestBody"]["required"], true);
                    parts.iter().filter(|p| p["type"] != "null").collect()
                }
                _ => vec![schema],
            };
            for part in parts {
                let target = part["$ref"].as_str().unwrap_or_else(|| panic!("{method} {path}"));
                let resolved = doc.pointer(&target[1..]).unwrap();
                let object = resolved["type"] == "object"
                    || resolved["oneOf"]
                        .as_array()
                        .is_some_and(|variants| variants.iter().all(|v| v["type"] == "object"));
                assert!(object, "{method} {path}: {target} is not an object: {resolved}");
            }
        }
    }
}
