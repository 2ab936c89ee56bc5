//! Prometheus metrics: request counts and latencies by route template and status,
//! and the engine's counters read fresh at every scrape.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use caskade_engine::{Engine, Stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::routes::ROUTES;

/// The `Content-Type` of a scrape: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Entities whose key counts are exported; prefixes of the engine's keys.
pub const ENTITIES: [&str; 2] = ["user", "event"];

/// Labels of a served request. `route` is the template, never the raw path, and
/// `method` is one of a fixed set, so the number of series stays bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

/// Statuses whose series are kept at hand per route (see [`Metrics::observe`]); the
/// rest are looked up in the families each time.
const CACHED_STATUSES: [u16; 8] = [200, 201, 204, 304, 400, 404, 412, 422];

/// A request series' two metrics, shared with their families.
type Series = (Counter, Histogram);

/// The server's metrics. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// For each route of [`ROUTES`] and each of [`CACHED_STATUSES`], the series once
    /// it exists: a request then costs no hashing and no lock of the families. A
    /// series is created on its first request, as without the cache, so a scrape
    /// shows the same series.
    series: Box<[OnceLock<Series>]>,
}

impl Metrics {
    /// Registers every metric; `engine` is read at scrape time once it is open, and
    /// `permits` (the in-flight cap of `max`) to count requests being served.
    pub fn new(engine: Arc<OnceLock<Engine>>, permits: Arc<Semaphore>, max: usize) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<RequestLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "caskade_http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "caskade_http_request_duration_seconds",
            "Time from request head to response head, by method, route template and status",
            latency.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { engine }));
        registry.register_collector(Box::new(InflightCollector { permits, max }));
        registry.register_collector(Box::new(LogCollector));
        Metrics {
            registry,
            requests,
            latency,
            series: (0..ROUTES.len() * CACHED_STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Counts one answered request.
    pub fn observe(
        &self,
        method: &Method,
        route: &'static str,
        status: StatusCode,
        took: Duration,
    ) {
        let labels = RequestLabels {
            method: method_label(method),
            route,
            status: status.as_u16(),
        };
        let seconds = took.as_secs_f64();
        if let Some(slot) = self.slot(method, route, status) {
            let (requests, latency) = slot.get_or_init(|| {
                (
                    self.requests.get_or_create(&labels).clone(),
                    self.latency.get_or_create(&labels).clone(),
                )
            });
            requests.inc();
            latency.observe(seconds);
            return;
        }
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// The cache slot of a request's series, if it has one.
    fn slot(&self, method: &Method, route: &str, status: StatusCode) -> Option<&OnceLock<Series>> {
        let status_index = CACHED_STATUSES.iter().position(|s| *s == status.as_u16())?;
        let route_index = ROUTES
            .iter()
            .position(|r| r.method == method.as_str() && r.template == route)?;
        self.series
            .get(route_index * CACHED_STATUSES.len() + status_index)
    }

    /// The scrape body. Reads the engine's counters, which may walk the index: call it
    /// on a blocking thread.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).is_err()
        {
            text.clear();
        }
        text
    }
}

/// Buckets from 100 µs doubling to about 13 s: a cached read to a slow fsync.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("other", |m| m.as_str())
}

/// Requests holding an in-flight permit, read from the semaphore at each scrape.
#[derive(Debug)]
struct InflightCollector {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Collector for InflightCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let busy = self.max.saturating_sub(self.permits.available_permits());
        let gauge = ConstGauge::new(i64::try_from(busy).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(
            "caskade_http_requests_in_flight",
            "/v1 requests being served now",
            None,
            gauge.metric_type(),
        )?)
    }
}

/// Log lines dropped because the logger thread fell behind (see [`crate::logging`]).
#[derive(Debug)]
struct LogCollector;

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(crate::logging::dropped_lines());
        counter.encode(encoder.encode_descriptor(
            "caskade_log_lines_dropped",
            "Log lines dropped instead of making requests wait, because stderr was read too slowly",
            None,
            counter.metric_type(),
        )?)
    }
}

/// Reads the engine's counters at each scrape, so values are never stale and cost
/// nothing between scrapes.
#[derive(Debug)]
struct EngineCollector {
    engine: Arc<OnceLock<Engine>>,
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(engine) = self.engine.get() else {
            return Ok(());
        };
        let stats = engine.stats();
        for (name, help, value) in gauges(&stats) {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        for (name, help, value) in counters(&stats) {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let batch = ConstGauge::new(records_per_batch(&stats));
        batch.encode(encoder.encode_descriptor(
            "caskade_engine_records_per_write_batch",
            "Mean group-commit batch size: records written per write batch since open",
            None,
            batch.metric_type(),
        )?)?;
        encode_entity_keys(engine, &mut encoder)
    }
}

fn encode_entity_keys(engine: &Engine, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(
        "caskade_entity_keys",
        "Keys in the index per entity (expired keys count until swept)",
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for entity in ENTITIES {
        let count = engine.count_prefix(format!("{entity}/").as_bytes());
        let gauge = ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX));
        gauge.encode(family.encode_family(&[("entity", entity)])?)?;
    }
    Ok(())
}

fn gauges(stats: &Stats) -> [(&'static str, &'static str, i64); 7] {
    let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    [
        ("caskade_engine_keys", "Keys in the index", g(stats.keys)),
        (
            "caskade_engine_disk_bytes",
            "Bytes of all segment files",
            g(stats.disk_bytes),
        ),
        (
            "caskade_engine_live_bytes",
            "Bytes of records the index points at",
            g(stats.live_bytes),
        ),
        (
            "caskade_engine_dead_bytes",
            "Bytes on disk no longer needed",
            g(stats.dead_bytes),
        ),
        (
            "caskade_engine_segments",
            "Segment files",
            g(stats.segments),
        ),
        (
            "caskade_engine_index_bytes",
            "Estimated memory held by the index",
            g(stats.index_bytes),
        ),
        (
            "caskade_engine_recovered_truncated_bytes",
            "Bytes of a torn tail dropped when the store was opened",
            g(stats.recovered_truncated_bytes),
        ),
    ]
}

fn counters(stats: &Stats) -> [(&'static str, &'static str, u64); 7] {
    [
        (
            "caskade_engine_fsyncs",
            "fdatasync calls made by the writer",
            stats.fsyncs,
        ),
        (
            "caskade_engine_write_batches",
            "Group commits written",
            stats.write_batches,
        ),
        (
            "caskade_engine_records_written",
            "Records written since open",
            stats.records_written,
        ),
        (
            "caskade_engine_compactions",
            "Compactions finished since open",
            stats.compactions,
        ),
        (
            "caskade_engine_bytes_reclaimed",
            "Disk bytes given back by compaction since open",
            stats.bytes_reclaimed,
        ),
        (
            "caskade_engine_expired_swept",
            "Expired keys removed from the index by TTL sweeps since open",
            stats.expired_swept,
        ),
        (
            "caskade_engine_hints_loaded",
            "Hint files read when the store was opened",
            stats.hints_loaded,
        ),
    ]
}

fn records_per_batch(stats: &Stats) -> f64 {
    if stats.write_batches == 0 {
        return 0.0;
    }
    stats.records_written as f64 / stats.write_batches as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled_by_template_and_status() {
        let metrics = Metrics::new(Arc::new(OnceLock::new()), Arc::new(Semaphore::new(4)), 4);
        metrics.observe(
            &Method::GET,
            "/v1/kv/{entity}/{key}",
            StatusCode::NOT_FOUND,
            Duration::from_millis(3),
        );
        let text = metrics.render();
        assert!(
            text.contains("# TYPE caskade_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"caskade_http_requests_total{method="GET",route="/v1/kv/{entity}/{key}",status="404"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("caskade_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn cached_and_uncached_series_count_alike() {
        let metrics = Metrics::new(Arc::new(OnceLock::new()), Arc::new(Semaphore::new(4)), 4);
        let route = "/v1/kv/{entity}/{key}";
        for status in [StatusCode::OK, StatusCode::OK, StatusCode::IM_A_TEAPOT] {
            metrics.observe(&Method::GET, route, status, Duration::from_millis(1));
        }
        metrics.observe(
            &Method::PATCH,
            route,
            StatusCode::OK,
            Duration::from_millis(1),
        );
        let text = metrics.render();
        for series in [
            r#"caskade_http_requests_total{method="GET",route="/v1/kv/{entity}/{key}",status="200"} 2"#,
            r#"caskade_http_requests_total{method="GET",route="/v1/kv/{entity}/{key}",status="418"} 1"#,
            r#"caskade_http_requests_total{method="PATCH",route="/v1/kv/{entity}/{key}",status="200"} 1"#,
            r#"caskade_http_request_duration_seconds_count{method="GET",route="/v1/kv/{entity}/{key}",status="200"} 2"#,
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        assert!(
            !text.contains(r#"status="201""#),
            "no series before its first request:\n{text}"
        );
    }

    #[test]
    fn odd_methods_share_one_label() {
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap_or_default()),
            "other"
        );
        assert_eq!(method_label(&Method::PUT), "PUT");
    }
}
