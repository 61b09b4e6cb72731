//! The application with Bybit USDT perpetuals (`bybit_linear`, a venue with leverage) enabled
//! against loopback fakes of its public stream and REST API (and, when asked, its private
//! stream).

use keel::configuration::Settings;

use crate::fake_bybit::FakeBybit;
use crate::fake_bybit_stream::FakeBybitStream;
use crate::{TestApp, spawn_app_with};

/// The app and the fakes behind its `bybit_linear` venue.
#[derive(Debug)]
pub struct LinearApp {
    /// The application.
    pub app: TestApp,
    /// The public stream: publish quotes and trades on it.
    pub stream: FakeBybitStream,
    /// The REST API (and its private stream).
    pub rest: FakeBybit,
}

/// Starts the app with `bybit_linear` on fresh fakes, its private stream too with `private`,
/// and `adjust` applied to the settings last.
pub async fn spawn_app_with_linear(private: bool, adjust: impl FnOnce(&mut Settings)) -> LinearApp {
    let stream = FakeBybitStream::start().await;
    let rest = FakeBybit::start().await;
    let (ws_url, rest_url) = (stream.url.clone(), rest.url());
    let private_url = if private { rest.private().url.clone() } else { String::new() };
    let app = spawn_app_with(move |s| {
        s.venues.bybit_linear.enabled = true;
        s.venues.bybit_linear.ws_url = ws_url;
        s.venues.bybit_linear.rest_url = rest_url;
        s.venues.bybit_linear.private_ws_url = private_url;
        adjust(s);
    })
    .await;
    LinearApp { app, stream, rest }
}
