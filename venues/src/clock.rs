//! A venue's clock as Keel knows it: the offset from local time to server time, when it was
//! last measured, and when it must be measured again. One per REST client (Binance's and
//! Bybit's both use it; Bybit's rule and its `10002` are in `crate::bybit::rest`).
//!
//! Binance refuses a signed request (`-1021`) whose `timestamp` is more than 1 s ahead of its
//! clock or older than the request's `recvWindow`
//! (<https://developers.binance.com/docs/binance-spot-api-docs/rest-api/endpoint-security-type>,
//! "Timing security"). So every signed call is stamped with local time plus the measured
//! offset, and the offset is measured again when it is [stale](ServerClock::is_stale): never
//! measured yet (right after a start or restart) or older than the refresh interval.
//!
//! Refresh on use, not a timer task: the clock is measured by the call that finds it stale,
//! just before it signs. A router then owns no task (nothing to spawn when it is built from
//! configuration, nothing to stop when it is dropped), an idle venue costs no requests, and the
//! first signed call after a start is the one that learns the offset, so it cannot fail for a
//! skew Keel has not measured yet. The measurement is single-flight: bots that find the clock
//! stale together wait for one `GET /api/v3/time`.
//!
//! Every `SIGNED` call goes through `RestClient::signed`, which applies this clock and the
//! `-1021` retry: place, cancel, query and account. The listen key's REST endpoints
//! (`/api/v3/userDataStream`) are `USER_STREAM`: the API key only, no `timestamp`, so no clock;
//! a user-data subscription over the WebSocket API with a signature would need it.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// How often the offset is measured again while the venue is in use. Clocks drift by
/// milliseconds per hour; five minutes keeps the offset well inside the 1 s Binance allows
/// ahead of its clock, at one request of weight 1 per five minutes.
pub const CLOCK_REFRESH: Duration = Duration::from_secs(300);

/// The offset to a venue's clock and when it was measured. One per REST client.
#[derive(Debug)]
pub struct ServerClock {
    /// Server time minus local time, ms.
    offset_ms: AtomicI64,
    /// When the offset was last measured, local ms since the epoch; 0 when never.
    synced_at_ms: AtomicU64,
    /// How far off the offset may be: half the round trip of its measurement, ms.
    uncertainty_ms: AtomicU64,
    /// How long a measurement stays good.
    refresh: Duration,
    /// Held while measuring, so concurrent callers wait for one measurement.
    measuring: tokio::sync::Mutex<()>,
}

impl ServerClock {
    /// A clock never measured, measured again every `refresh`.
    pub fn new(refresh: Duration) -> Self {
        Self {
            offset_ms: AtomicI64::new(0),
            synced_at_ms: AtomicU64::new(0),
            uncertainty_ms: AtomicU64::new(0),
            refresh,
            measuring: tokio::sync::Mutex::new(()),
        }
    }

    /// How long a measurement stays good.
    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// Server time minus local time, ms (0 until measured).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Binance's time now by our clock and the last measured offset, ms.
    pub fn timestamp(&self) -> u64 {
        (local_ms() as i64 + self.offset_ms()).max(0) as u64
    }

    /// When the offset was last measured, local ms since the epoch; `None` when never.
    pub fn synced_at_ms(&self) -> Option<u64> {
        Some(self.synced_at_ms.load(Ordering::Relaxed)).filter(|&at| at > 0)
    }

    /// Never measured, or measured longer than the refresh interval ago.
    pub fn is_stale(&self) -> bool {
        self.synced_at_ms().is_none_or(|at| {
            local_ms().saturating_sub(at) >= u64::try_from(self.refresh.as_millis()).unwrap_or(0)
        })
    }

    /// Whether a measurement finished after `since_ms` (local ms): one that may already account
    /// for what a request sent at `since_ms` was refused for.
    pub fn measured_since(&self, since_ms: u64) -> bool {
        self.synced_at_ms().is_some_and(|at| at > since_ms)
    }

    /// Records a measurement.
    pub fn record(&self, offset_ms: i64) {
        self.record_within(offset_ms, 0);
    }

    /// Records a measurement taken over a round trip of `2 × uncertainty_ms`: the server's time
    /// was read somewhere in it, so the offset may be off by that much either way.
    pub fn record_within(&self, offset_ms: i64, uncertainty_ms: u64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
        self.uncertainty_ms.store(uncertainty_ms, Ordering::Relaxed);
        self.synced_at_ms.store(local_ms().max(1), Ordering::Relaxed);
    }

    /// How far off the last measured offset may be, ms (half its measurement's round trip).
    pub fn uncertainty_ms(&self) -> u64 {
        self.uncertainty_ms.load(Ordering::Relaxed)
    }

    /// Waits for any measurement in progress and holds off others until the guard drops.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.measuring.lock().await
    }
}

/// Runs a signed call under `clock`'s rules, for any venue: measures first when the clock is
/// stale, and when the venue refuses the call for its timestamp (`is_skew`), measures again and
/// makes the call once more with a new stamp (a second refusal is returned). Measurements are
/// single-flight. Only a timestamp refusal is retried: venues check the timestamp before
/// anything else, so the refused call did nothing, even a placement.
pub async fn signed_call<T, E, M, MF, C, CF>(
    clock: &ServerClock,
    venue: &'static str,
    measure: M,
    call: C,
    is_skew: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    M: Fn() -> MF,
    MF: Future<Output = Result<i64, E>>,
    C: Fn() -> CF,
    CF: Future<Output = Result<T, E>>,
{
    if clock.is_stale() {
        let _measuring = clock.lock().await;
        // Another caller may have measured while this one waited. Unmeasured, the call goes
        // out with the last offset, and a refusal measures again below.
        if clock.is_stale() {
            let _ = measure().await;
        }
    }
    let sent_ms = local_ms();
    let refused = match call().await {
        Err(err) if is_skew(&err) => err,
        other => return other,
    };
    metrics::counter!("keel_venue_clock_resyncs_total", "venue" => venue).increment(1);
    {
        let _measuring = clock.lock().await;
        // Skip the measurement when a caller refused at the same time already made it.
        if !clock.measured_since(sent_ms) && measure().await.is_err() {
            return Err(refused);
        }
    }
    call().await
}

/// Local time, ms since the epoch.
pub fn local_ms() -> u64 {
    crate::now_us() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_is_stale_until_measured_and_again_after_its_refresh() {
        let clock = ServerClock::new(Duration::from_secs(60));
        assert!(clock.is_stale(), "never measured");
        assert_eq!(clock.synced_at_ms(), None);
        clock.record(-2_500);
        assert!(!clock.is_stale());
        assert_eq!(clock.offset_ms(), -2_500);
        let local = local_ms() as i64;
        assert!((clock.timestamp() as i64 - (local - 2_500)).abs() < 100);
        assert!(!clock.measured_since(local_ms() + 1));
        assert!(clock.measured_since(0));
        let always = ServerClock::new(Duration::ZERO);
        always.record(0);
        assert!(always.is_stale(), "a zero interval measures before every call");
    }
}
