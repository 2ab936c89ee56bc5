//! Prometheus metrics: request counts and latencies by route template and status,
//! and the engine's counters read fresh at every scrape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use caskade_engine::{Engine, Stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::routes::ROUTES;

/// The `Content-Type` of a scrape: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Entities whose key counts are exported; prefixes of the engine's keys.
pub const ENTITIES: [&str; 2] = ["user", "event"];

/// Labels of a served request. `route` is the template, never the raw path, and
/// `method` is one of a fixed set, so the number of series stays bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

/// Statuses whose series are kept at hand per route (see [`Metrics::observe`]); the
/// rest are looked up in the map each time.
const CACHED_STATUSES: [u16; 8] = [200, 201, 204, 304, 400, 404, 412, 422];

/// Latency buckets: the first ends at 100 µs, each next one at twice the last, for
/// [`LATENCY_BOUNDS`] of them (to about 13 s: a cached read to a slow fsync), then
/// `+Inf`.
const LATENCY_FIRST_NS: u64 = 100_000;
const LATENCY_BOUNDS: usize = 18;

/// Shards per series: a thread counts in its own, so the runtime's threads never write
/// one cache line (a shared histogram's lock and counters moved between the two cores
/// on every request: ~6 % of a GET's CPU, ~10 % of its user time).
const SHARDS: usize = 8;

/// One shard of a request series: a count per latency bucket and the latencies' sum.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; LATENCY_BOUNDS + 1],
    sum_ns: AtomicU64,
}

/// The requests of one label set: their count (the buckets' total, so the counter and
/// the histogram never disagree) and latency histogram.
#[derive(Debug, Default)]
struct Series {
    shards: [Shard; SHARDS],
}

impl Series {
    fn observe(&self, took: Duration) {
        let shard = &self.shards[shard_of_this_thread()];
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        shard.buckets[latency_bucket(ns)].fetch_add(1, Ordering::Relaxed);
        shard.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Every shard added up: the count of each bucket (not cumulative) and the sum.
    fn totals(&self) -> ([u64; LATENCY_BOUNDS + 1], u64) {
        let mut buckets = [0u64; LATENCY_BOUNDS + 1];
        let mut sum_ns = 0u64;
        for shard in &self.shards {
            for (total, bucket) in buckets.iter_mut().zip(&shard.buckets) {
                *total += bucket.load(Ordering::Relaxed);
            }
            sum_ns = sum_ns.wrapping_add(shard.sum_ns.load(Ordering::Relaxed));
        }
        (buckets, sum_ns)
    }
}

/// The bucket of a latency: the first whose bound it does not exceed (Prometheus's `le`),
/// or the last (`+Inf`).
fn latency_bucket(ns: u64) -> usize {
    // Bucket i ends at LATENCY_FIRST_NS << i: a latency in (first << (i-1), first << i]
    // has (ns - 1) / first in [2^(i-1), 2^i - 1], whose bit length is i.
    let steps = ns.saturating_sub(1) / LATENCY_FIRST_NS;
    ((u64::BITS - steps.leading_zeros()) as usize).min(LATENCY_BOUNDS)
}

/// This thread's shard, given out in turn when a thread first counts a request.
fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// The request series that exist (a series is made on its first request, so a scrape
/// shows only statuses that happened).
type SeriesMap = Mutex<HashMap<RequestLabels, Arc<Series>>>;

/// The server's metrics. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Arc<SeriesMap>,
    /// For each route of [`ROUTES`] and each of [`CACHED_STATUSES`], the series once
    /// it exists: a request then costs no hashing and no lock of the map.
    series: Box<[OnceLock<Arc<Series>>]>,
}

impl Metrics {
    /// Registers every metric; `engine` is read at scrape time once it is open, and
    /// `permits` (the in-flight cap of `max`) to count requests being served.
    pub fn new(engine: Arc<OnceLock<Engine>>, permits: Arc<Semaphore>, max: usize) -> Metrics {
        let mut registry = Registry::default();
        let requests = Arc::new(SeriesMap::default());
        registry.register_collector(Box::new(RequestCollector {
            requests: requests.clone(),
        }));
        registry.register_collector(Box::new(EngineCollector { engine }));
        registry.register_collector(Box::new(InflightCollector { permits, max }));
        registry.register_collector(Box::new(LogCollector));
        Metrics {
            registry,
            requests,
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
        let labels = || RequestLabels {
            method: method_label(method),
            route,
            status: status.as_u16(),
        };
        match self.slot(method, route, status) {
            Some(slot) => slot.get_or_init(|| self.series(labels())).observe(took),
            None => self.series(labels()).observe(took),
        }
    }

    /// The series of `labels`, made if it is the first request with them.
    fn series(&self, labels: RequestLabels) -> Arc<Series> {
        let mut map = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(labels).or_default().clone()
    }

    /// The cache slot of a request's series, if it has one.
    fn slot(
        &self,
        method: &Method,
        route: &str,
        status: StatusCode,
    ) -> Option<&OnceLock<Arc<Series>>> {
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

/// Writes the request series as a counter family and a histogram family, in label
/// order.
#[derive(Debug)]
struct RequestCollector {
    requests: Arc<SeriesMap>,
}

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut series: Vec<(RequestLabels, [u64; LATENCY_BOUNDS + 1], u64)> = {
            let map = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            map.iter()
                .map(|(labels, series)| {
                    let (buckets, sum_ns) = series.totals();
                    (labels.clone(), buckets, sum_ns)
                })
                .collect()
        };
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let mut counters = encoder.encode_descriptor(
            "caskade_http_requests",
            "HTTP requests answered, by method, route template and status",
            None,
            MetricType::Counter,
        )?;
        for (labels, buckets, _) in &series {
            let count: u64 = buckets.iter().sum();
            counters
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
        let mut latency = encoder.encode_descriptor(
            "caskade_http_request_duration_seconds",
            "Time from request head to response head, by method, route template and status",
            None,
            MetricType::Histogram,
        )?;
        let bounds = latency_bounds();
        for (labels, buckets, sum_ns) in &series {
            let count: u64 = buckets.iter().sum();
            let buckets: Vec<(f64, u64)> = bounds
                .iter()
                .copied()
                .zip(buckets.iter().copied())
                .collect();
            latency
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(*sum_ns as f64 / 1e9, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// The buckets' upper bounds in seconds as Prometheus shows them (`le`), `+Inf` last.
fn latency_bounds() -> Vec<f64> {
    let first = LATENCY_FIRST_NS as f64 / 1e9;
    exponential_buckets(first, 2.0, LATENCY_BOUNDS as u16)
        .chain(std::iter::once(f64::INFINITY))
        .collect()
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
    fn latencies_fall_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        for (ns, bucket) in [
            (0, 0),
            (100_000, 0),
            (100_001, 1),
            (200_000, 1),
            (200_001, 2),
            (400_000, 2),
            (LATENCY_FIRST_NS << 17, 17),
            ((LATENCY_FIRST_NS << 17) + 1, LATENCY_BOUNDS),
            (u64::MAX, LATENCY_BOUNDS),
        ] {
            assert_eq!(latency_bucket(ns), bucket, "{ns} ns");
        }
    }

    /// The sharded series renders what prometheus_client's own histogram rendered
    /// before it (same `le` bounds, cumulative counts, count and sum), whichever
    /// threads counted the requests.
    #[test]
    fn the_sharded_histogram_renders_as_the_library_histogram_did() {
        use prometheus_client::metrics::histogram::Histogram;
        let metrics = Metrics::new(Arc::new(OnceLock::new()), Arc::new(Semaphore::new(4)), 4);
        let reference = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        let route = "/v1/kv/{entity}/{key}";
        let latencies: Vec<Duration> = (0..400u64)
            .map(|i| Duration::from_nanos(i * i * 97_000 + 50_000))
            .chain([Duration::from_secs(100)])
            .collect();
        std::thread::scope(|scope| {
            for part in latencies.chunks(100) {
                let metrics = &metrics;
                scope.spawn(move || {
                    for took in part {
                        metrics.observe(&Method::GET, route, StatusCode::OK, *took);
                    }
                });
            }
        });
        for took in &latencies {
            reference.observe(took.as_secs_f64());
        }
        let mut registry = Registry::default();
        registry.register(
            "caskade_http_request_duration_seconds",
            "Time from request head to response head, by method, route template and status",
            reference,
        );
        let mut theirs = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut theirs, &registry)
            .expect("encodes");
        let ours = metrics.render();
        let labels = r#"method="GET",route="/v1/kv/{entity}/{key}",status="200""#;
        for line in theirs
            .lines()
            .filter(|l| l.contains("_bucket") || l.contains("_count"))
        {
            // `name{le="x"} n` is ours with our labels first; `name n` with them alone.
            let expected = match line.split_once('{') {
                Some((name, rest)) => format!("{name}{{{labels},{rest}"),
                None => {
                    let (name, value) = line.split_once(' ').expect("a value");
                    format!("{name}{{{labels}}} {value}")
                }
            };
            assert!(ours.contains(&expected), "{expected} missing:\n{ours}");
        }
        let sum_of = |text: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with("caskade_http_request_duration_seconds_sum"))
                .expect("a sum");
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a number")
        };
        assert!(
            (sum_of(&ours) - sum_of(&theirs)).abs() < 1e-6,
            "{ours}\n{theirs}"
        );
        assert!(ours.contains(&format!(
            "caskade_http_requests_total{{{labels}}} {}",
            latencies.len()
        )));
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
