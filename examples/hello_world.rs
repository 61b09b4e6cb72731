//! The cheapest actix-web request, for comparing Keel's authenticated path against it
//! (`scripts/auth-path-bench.sh`, docs/PERFORMANCE.md "The authenticated request path").
//!
//! Built from the workspace's actix-web, so both servers run the same HTTP stack. One worker
//! unless `--workers N`; Keel's allocator (mimalloc) so the comparison is of work done, not of
//! allocators.
//!
//! `cargo run --release --example hello_world -- --port 8099 [--workers 1]`

use actix_web::{App, HttpServer, web};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = arg(&args, "--port", 8099);
    let workers = arg(&args, "--workers", 1).max(1);
    HttpServer::new(|| App::new().route("/", web::get().to(|| async { "Hello world!" })))
        .workers(workers)
        .bind(("127.0.0.1", u16::try_from(port).unwrap_or(8099)))?
        .run()
        .await
}
