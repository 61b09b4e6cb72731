//! Logging: `tracing` with pretty output in development and JSON lines in production.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::configuration::{Environment, LogFormat, Settings};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
///
/// Safe to call more than once (tests): later calls leave the first subscriber in place.
pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => settings.environment == Environment::Production,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
    // Already installed (a second app in the same test process): keep the first one.
    drop(result);
    keel_actors::supervisor::install_panic_hook();
}
