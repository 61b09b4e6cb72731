//! Prometheus: the recorder, the per-request middleware and `GET /metrics`.
//!
//! Request metrics are labelled by the *matched route pattern* (`/api/v1/bots/{id}`), never the
//! raw path, so their cardinality is bounded by the route table.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Latency buckets for request and actor histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];
/// How often histogram buckets are compacted between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Recorder> = OnceLock::new();
/// Serialises installation, so two apps starting at once (tests) install one recorder.
static INSTALLING: Mutex<()> = Mutex::new(());

/// The installed Prometheus recorder and the process collector.
#[derive(Debug)]
pub struct Recorder {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl Recorder {
    /// Installs the global recorder, once per process (tests build many apps in one process).
    ///
    /// # Errors
    /// Another recorder was installed first.
    pub fn install() -> anyhow::Result<&'static Recorder> {
        if let Some(recorder) = RECORDER.get() {
            return Ok(recorder);
        }
        let _installing = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(recorder) = RECORDER.get() {
            return Ok(recorder);
        }
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)?
            .install_recorder()?;
        let process = metrics_process::Collector::default();
        process.describe();
        describe();
        let recorder = RECORDER.get_or_init(|| Recorder { handle, process });
        std::thread::Builder::new().name("metrics-upkeep".to_owned()).spawn(|| {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                if let Some(r) = RECORDER.get() {
                    r.handle.run_upkeep();
                }
            }
        })?;
        Ok(recorder)
    }

    /// The Prometheus text exposition, with fresh process figures; in cluster mode every sample
    /// carries the label `node_id` (`node`), so series from several nodes stay apart.
    pub fn render(&self, node: Option<&str>) -> String {
        self.process.collect();
        let text = self.handle.render();
        match node {
            Some(node) => with_node_label(&text, node),
            None => text,
        }
    }
}

/// `text` with `node_id="{node}"` added to every sample line (comments are left as they are).
///
/// This is what the exporter's global labels do, applied when the text is rendered rather than
/// when the recorder is installed: the recorder is one per process, and tests run several nodes
/// (each with its own `node_id`) in one process. A metric name ends at `{` or a space, neither of
/// which a name may hold, so the label goes right after it; `node` is letters, digits, `-` and
/// `_` (`cluster.node_id` is checked), so it needs no escaping.
fn with_node_label(text: &str, node: &str) -> String {
    let label = format!("node_id=\"{node}\"");
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        if line.starts_with('#') || line.trim().is_empty() {
            out.push_str(line);
            continue;
        }
        match line.find(['{', ' ']) {
            Some(at) if line[at..].starts_with("{}") => {
                out.push_str(&line[..=at]);
                out.push_str(&label);
                out.push_str(&line[at + 1..]);
            }
            Some(at) if line[at..].starts_with('{') => {
                out.push_str(&line[..=at]);
                out.push_str(&label);
                out.push(',');
                out.push_str(&line[at + 1..]);
            }
            Some(at) => {
                out.push_str(&line[..at]);
                out.push('{');
                out.push_str(&label);
                out.push('}');
                out.push_str(&line[at..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

fn describe() {
    metrics::describe_counter!(
        "keel_http_requests_total",
        "HTTP requests by method, route and status."
    );
    metrics::describe_histogram!(
        "keel_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by method and route."
    );
    metrics::describe_gauge!("keel_http_requests_in_flight", "HTTP requests being served.");
    metrics::describe_counter!(
        "keel_access_log_dropped_total",
        "Access-log lines dropped because the writer was behind (or gone)."
    );
    metrics::describe_counter!(
        "keel_access_log_errors_total",
        "Access-log writes that failed (the lines are lost)."
    );
    metrics::describe_counter!("keel_actor_restarts_total", "Actor restarts by supervisors.");
    metrics::describe_counter!(
        "keel_actor_failures_total",
        "Actors given up on after spending their restart budget."
    );
    metrics::describe_counter!("keel_mailbox_full_total", "Requests refused by a full mailbox.");
    metrics::describe_counter!("keel_actor_timeouts_total", "Actor requests past their deadline.");
    metrics::describe_counter!("keel_panics_total", "Panics caught anywhere in the process.");
    metrics::describe_counter!("keel_store_flushes_total", "sled flushes led by group commit.");
    metrics::describe_counter!(
        "keel_store_commits_total",
        "Durable commits, by whether they led a flush or shared one."
    );
    metrics::describe_histogram!(
        "keel_store_flush_seconds",
        metrics::Unit::Seconds,
        "Duration of one group-commit flush, its fdatasync included."
    );
    metrics::describe_counter!(
        "keel_store_fsyncs_total",
        "fdatasyncs of sled's log issued by group commit (one per group of commits)."
    );
    metrics::describe_gauge!(
        "keel_store_free_bytes",
        metrics::Unit::Bytes,
        "Free bytes under the data directory, read once a second."
    );
    metrics::describe_gauge!(
        "keel_store_disk_low",
        "1 while the free space is below store.min_free_bytes (orders and bot starts refused)."
    );
    metrics::describe_gauge!(
        "keel_store_bytes",
        metrics::Unit::Bytes,
        "Bytes of keys and values stored, by kind (tree, or recordings); refreshed every 10 min."
    );
    metrics::describe_gauge!("keel_store_rows", "Rows stored, by kind (files, for recordings).");
    metrics::describe_gauge!(
        "keel_store_growth_bytes_per_day",
        metrics::Unit::Bytes,
        "Bytes of the rows of each kind written in the last 24 hours."
    );
    metrics::describe_gauge!(
        "keel_store_oldest_record_seconds",
        metrics::Unit::Seconds,
        "Time of the oldest record of each kind, seconds since the epoch."
    );
    metrics::describe_gauge!(
        "keel_store_size_on_disk_bytes",
        metrics::Unit::Bytes,
        "Size of sled's files, as sled reports it."
    );
    metrics::describe_counter!(
        "keel_retention_removed_total",
        "Rows (and recording files) removed by retention, by kind."
    );
}

/// A request's method as a label: the standard methods by name, anything else `other`, so a
/// client cannot mint label values (or access-log values) of its own.
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// The matched route pattern (`/api/v1/bots/{id}`, never the raw path) and status of a served
/// request. `unmatched` when no route matched, or when an inner middleware failed and left no
/// request to ask.
pub fn route_and_status<B>(
    result: &Result<ServiceResponse<B>, actix_web::Error>,
) -> (String, StatusCode) {
    match result {
        Ok(res) => {
            (res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned()), res.status())
        }
        Err(err) => ("unmatched".to_owned(), err.as_response_error().status_code()),
    }
}

/// Counts and times every request by its matched route pattern.
///
/// # Errors
/// Passes on the inner service's error.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let in_flight = metrics::gauge!("keel_http_requests_in_flight");
    in_flight.increment(1.0);
    let result = next.call(req).await;
    in_flight.decrement(1.0);
    let (route, status) = route_and_status(&result);
    metrics::histogram!("keel_http_request_duration_seconds", "method" => method,
        "route" => route.clone())
    .record(started.elapsed().as_secs_f64());
    metrics::counter!("keel_http_requests_total", "method" => method, "route" => route,
        "status" => status.as_u16().to_string())
    .increment(1);
    result
}

/// `GET /metrics`: Prometheus text format (every sample labelled `node_id` in cluster mode).
pub async fn scrape(
    recorder: web::Data<&'static Recorder>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let node = state.cluster.as_ref().map(keel_actors::cluster::Cluster::node_id);
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(recorder.render(node))
}

#[cfg(test)]
mod tests {
    use super::with_node_label;

    #[test]
    fn the_node_label_goes_on_every_sample_and_on_no_comment() {
        let text = "# HELP keel_up Up.\n# TYPE keel_up gauge\nkeel_up 1\n\
            keel_http_requests_total{method=\"GET\",route=\"/a b\"} 3\n\
            keel_flush_seconds_bucket{le=\"0.5\"} 2\nkeel_flush_seconds_sum 0.25\n\
            keel_empty{} 0\n\n";
        let labelled = with_node_label(text, "node-a");
        assert_eq!(
            labelled,
            "# HELP keel_up Up.\n# TYPE keel_up gauge\nkeel_up{node_id=\"node-a\"} 1\n\
            keel_http_requests_total{node_id=\"node-a\",method=\"GET\",route=\"/a b\"} 3\n\
            keel_flush_seconds_bucket{node_id=\"node-a\",le=\"0.5\"} 2\n\
            keel_flush_seconds_sum{node_id=\"node-a\"} 0.25\n\
            keel_empty{node_id=\"node-a\"} 0\n\n"
        );
    }
}
