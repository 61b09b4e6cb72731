//! The web dashboard: `web/` embedded in the binary at compile time and served at `/` (the page)
//! and `/ui/…` (its modules, styles and the vendored chart library), under a strict
//! Content-Security-Policy. The page is a client of the public API only; see `web/README.md`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Compress;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

/// The policy of every dashboard response: nothing but this origin, no inline script or style,
/// no eval, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// Where the assets are served.
pub const ASSET_PREFIX: &str = "/ui";

/// One embedded file.
struct Asset {
    /// Path under `web/` (and under [`ASSET_PREFIX`]).
    path: &'static str,
    body: &'static [u8],
    mime: &'static str,
}

macro_rules! asset {
    ($path:literal, $mime:expr) => {
        Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
            mime: $mime,
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads. A test holds this list to the `web/` folder.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/live.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/schema_form.js", JS),
    asset!("js/chart.js", JS),
    asset!("js/pages/auth.js", JS),
    asset!("js/pages/bots.js", JS),
    asset!("js/pages/bot.js", JS),
    asset!("js/pages/new_bot.js", JS),
    asset!("js/pages/strategies.js", JS),
    asset!("js/pages/accounts.js", JS),
    asset!("js/pages/backtests.js", JS),
    asset!("js/pages/settings.js", JS),
    asset!("vendor/lightweight-charts/lightweight-charts.standalone.production.mjs", JS),
];

/// Registers `/` and `/ui/{path}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .wrap(Compress::default())
            .route(web::get().to(index))
            .route(web::head().to(index)),
    )
    .service(
        web::resource(format!("{ASSET_PREFIX}/{{path:.*}}"))
            .wrap(Compress::default())
            .route(web::get().to(asset))
            .route(web::head().to(asset)),
    );
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, find("index.html"))
}

async fn asset(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    serve(&req, find(&path))
}

fn find(path: &str) -> Option<(usize, &'static Asset)> {
    ASSETS.iter().enumerate().find(|(_, a)| a.path == path)
}

/// Each asset's entity tag: a hash of its bytes, computed once.
fn etag(index: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut hasher = DefaultHasher::new();
                a.body.hash(&mut hasher);
                format!("\"{:016x}\"", hasher.finish())
            })
            .collect()
    })[index]
}

fn serve(req: &HttpRequest, found: Option<(usize, &'static Asset)>) -> HttpResponse {
    let mut response = match found {
        None => super::ApiError::not_found("NOT_FOUND", format!("nothing at {}", req.path()))
            .error_response(),
        Some((i, asset)) => {
            let tag = etag(i);
            let disk = from_disk(asset.path);
            let fresh = disk.is_none()
                && req
                    .headers()
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
            let mut builder = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
            builder
                .insert_header((header::ETAG, tag))
                // Names are not content-hashed: revalidate (a 304 when unchanged).
                .insert_header((header::CACHE_CONTROL, "no-cache"));
            if fresh {
                builder.finish()
            } else if let Some(body) = disk {
                builder.content_type(asset.mime).body(body)
            } else {
                builder.content_type(asset.mime).body(asset.body)
            }
        }
    };
    let headers = response.headers_mut();
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Debug builds only: with `KEEL_DASHBOARD_DIR` set (to `web/`), files are read from disk on
/// every request, so the page can be edited without rebuilding. Release builds serve only what
/// was embedded.
fn from_disk(path: &str) -> Option<Vec<u8>> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let dir = std::env::var_os("KEEL_DASHBOARD_DIR")?;
    std::fs::read(std::path::Path::new(&dir).join(path)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn every_file_the_page_may_load_is_embedded_and_nothing_else() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut on_disk = Vec::new();
        files(&base, &base, &mut on_disk);
        // Documentation and the vendored library's license ship in the repository, not the page.
        on_disk
            .retain(|p| !p.ends_with(".md") && !p.ends_with("LICENSE") && !p.ends_with("VERSION"));
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(find("index.html").unwrap().1.body).unwrap();
        assert!(!html.contains("style="), "inline style attribute");
        assert!(!html.contains("<style"), "inline style element");
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline script: <script{open}>");
        }
        for asset in ASSETS.iter().filter(|a| a.path.starts_with("js/")) {
            let code = std::str::from_utf8(asset.body).unwrap();
            for banned in ["eval(", "new Function", "innerHTML", "setAttribute(\"style\""] {
                assert!(!code.contains(banned), "{} uses {banned}", asset.path);
            }
        }
    }
}
