//! Prometheus metrics, one registry per application instance (tests run
//! several in one process, each with its own numbers).
//!
//! - Requests by method, route and status, and a latency histogram by
//!   method and route, counted by the middleware as requests end.
//! - The store's writer: appends and events per group, and the time from
//!   taking the write lock to the end of the commit ([`WriterMetrics`],
//!   the store's [`WriterObserver`]).
//! - Read at scrape time, without a query: the log's head, events appended
//!   since start, and per projection its position, lag in events, whether it
//!   is failed and how often it was marked failed ([`LogCollector`]).
//! - The process (CPU, memory, open files, threads) on Linux.
//!
//! Counting takes no lock shared by every request: each metric family has
//! its own, and the label sets already seen are found under a read lock.

use std::sync::Arc;
use std::time::Duration;

use ledgerdesk_projections::{
    LagHistogram, ProjectionHealth, Projector, WorkerState, LAG_BUCKETS_MS,
};
use ledgerdesk_store::{GroupStats, WriterObserver};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::sync::watch;

/// Request latency bucket bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The metrics of one application instance.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    writer: Arc<WriterMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the request, writer and process metrics. The
    /// log and projection metrics join it with [`Metrics::follow`].
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "ledgerdesk_http_requests_total",
                "HTTP requests answered, by method, route and status.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "ledgerdesk_http_request_duration_seconds",
                "Time to answer, by method and route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric");
        let writer = Arc::new(WriterMetrics::new());
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        for c in writer.collectors() {
            registry.register(c).expect("registered once");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("registered once");
        Self {
            registry,
            requests,
            latency,
            writer,
        }
    }

    /// The observer to hand the store when opening it.
    pub fn writer(&self) -> Arc<WriterMetrics> {
        self.writer.clone()
    }

    /// Add the log's head and the projections, read at each scrape.
    pub fn follow(&self, head: watch::Receiver<u64>, projector: Projector) {
        self.registry
            .register(Box::new(LogCollector::new(head, projector)))
            .expect("followed once");
    }

    /// Record one answered request. `route` is the matched pattern.
    pub fn observe(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[method, route, &status])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The store writer's groups: how many appends and events each carried,
/// and how long from the write lock to the end of the commit.
pub struct WriterMetrics {
    appends: Histogram,
    events: Histogram,
    commit: Histogram,
    failed: IntCounter,
}

impl WriterMetrics {
    fn new() -> Self {
        let sizes = exponential_buckets(1.0, 4.0, 9).expect("valid buckets");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric")
        };
        Self {
            appends: histogram(
                "ledgerdesk_writer_group_appends",
                "Appends (callers) served by one committed writer group.",
                sizes.clone(),
            ),
            events: histogram(
                "ledgerdesk_writer_group_events",
                "Events written by one committed writer group.",
                sizes,
            ),
            commit: histogram(
                "ledgerdesk_writer_commit_seconds",
                "Time from asking for the write lock to the end of a group's durable commit.",
                BUCKETS.to_vec(),
            ),
            failed: IntCounter::new(
                "ledgerdesk_writer_groups_failed_total",
                "Writer groups that did not commit (every append in them was refused as unavailable or conflicting).",
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.appends.clone()),
            Box::new(self.events.clone()),
            Box::new(self.commit.clone()),
            Box::new(self.failed.clone()),
        ]
    }
}

impl WriterObserver for WriterMetrics {
    fn group(&self, group: GroupStats) {
        if group.committed {
            self.appends.observe(group.appends as f64);
            self.events.observe(group.events as f64);
            self.commit.observe(group.elapsed.as_secs_f64());
        } else {
            self.failed.inc();
        }
    }
}

/// Metrics read when scraped: the log's head and what this process knows
/// of each projection (no query). Each scrape fills fresh metrics, so two
/// scrapes at once never see each other's half-done numbers.
pub struct LogCollector {
    head: watch::Receiver<u64>,
    head_at_start: u64,
    projector: Projector,
    descs: Vec<Desc>,
}

fn appended() -> IntCounter {
    IntCounter::new(
        "ledgerdesk_events_appended_total",
        "Events appended to the log since this process started.",
    )
    .expect("valid metric")
}

fn head_position() -> IntGauge {
    IntGauge::new(
        "ledgerdesk_event_log_head_position",
        "The position of the last event in the log.",
    )
    .expect("valid metric")
}

fn per_projection(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["projection"]).expect("valid metric")
}

fn failures_total() -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "ledgerdesk_projection_failures_total",
            "Times a projection was marked failed (an event it could not apply) since this process started.",
        ),
        &["projection"],
    )
    .expect("valid metric")
}

fn failed() -> IntGaugeVec {
    per_projection(
        "ledgerdesk_projection_failed",
        "Whether the projection's worker in this process is failed (1) or not (0).",
    )
}

fn position() -> IntGaugeVec {
    per_projection(
        "ledgerdesk_projection_position",
        "The log position the projection has reached.",
    )
}

fn lag() -> IntGaugeVec {
    per_projection(
        "ledgerdesk_projection_lag_events",
        "Events in the log the projection has not applied yet (head minus its position).",
    )
}

impl LogCollector {
    fn new(head: watch::Receiver<u64>, projector: Projector) -> Self {
        let head_at_start = *head.borrow();
        let descs = [
            appended().desc(),
            head_position().desc(),
            failures_total().desc(),
            failed().desc(),
            position().desc(),
            lag().desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .chain(
            Desc::new(
                LAG_SECONDS.to_string(),
                "Time from an event's recording to the commit of the page that applied it."
                    .to_string(),
                vec!["projection".to_string()],
                Default::default(),
            )
            .ok(),
        )
        .collect();
        Self {
            head,
            head_at_start,
            projector,
            descs,
        }
    }
}

impl Collector for LogCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let head = *self.head.borrow();
        let appended_total = appended();
        appended_total.inc_by(head.saturating_sub(self.head_at_start));
        let head_gauge = head_position();
        head_gauge.set(head as i64);
        let mut out = appended_total.collect();
        out.extend(head_gauge.collect());
        out.extend(projection_families(&self.projector.health(), head));
        out.push(lag_family(&self.projector.lags()));
        out
    }
}

const LAG_SECONDS: &str = "ledgerdesk_projection_lag_seconds";

/// How long events waited for this process's projection workers: from
/// `recorded_at` to the commit of the page that applied them. Counted by the
/// projector in its own buckets, so it is built here rather than observed.
fn lag_family(lags: &[LagHistogram]) -> MetricFamily {
    use prometheus::proto::{Bucket, Histogram as Hist, LabelPair, Metric, MetricType};
    let metrics = lags
        .iter()
        .map(|h| {
            let mut cumulative = 0;
            let buckets = LAG_BUCKETS_MS
                .iter()
                .zip(&h.counts)
                .map(|(bound_ms, n)| {
                    cumulative += n;
                    let mut b = Bucket::default();
                    b.set_upper_bound(*bound_ms as f64 / 1_000.0);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            let mut hist = Hist::default();
            hist.set_sample_count(h.total());
            hist.set_sample_sum(h.sum.as_secs_f64());
            hist.set_bucket(buckets);
            let mut label = LabelPair::default();
            label.set_name("projection".to_string());
            label.set_value(h.projection.to_string());
            let mut m = Metric::from_label(vec![label]);
            m.set_histogram(hist);
            m
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(LAG_SECONDS.to_string());
    family.set_help(
        "Time from an event's recording to the commit of the page that applied it, per projection (this process's workers)."
            .to_string(),
    );
    family.set_field_type(MetricType::HISTOGRAM);
    family.set_metric(metrics);
    family
}

/// The per-projection families for `projections` with the log at `head`.
fn projection_families(projections: &[ProjectionHealth], head: u64) -> Vec<MetricFamily> {
    let (failures, failed, position, lag) = (failures_total(), failed(), position(), lag());
    for p in projections {
        failures
            .with_label_values(&[p.name])
            .inc_by(p.failures_total);
        failed
            .with_label_values(&[p.name])
            .set(i64::from(p.state == WorkerState::Failed));
        position.with_label_values(&[p.name]).set(p.position as i64);
        lag.with_label_values(&[p.name])
            .set(head.saturating_sub(p.position) as i64);
    }
    let mut out = failures.collect();
    out.extend(failed.collect());
    out.extend(position.collect());
    out.extend(lag.collect());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(families: &[MetricFamily]) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(families, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.observe("GET", "/healthz", 200, Duration::from_millis(3));
        m.writer().group(GroupStats {
            appends: 3,
            events: 5,
            elapsed: Duration::from_millis(2),
            committed: true,
        });
        let text = m.render();
        assert!(
            text.contains(
                "ledgerdesk_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"0.0025\"} 0"), "{text}");
        assert!(
            text.contains("ledgerdesk_writer_group_appends_bucket{le=\"4\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ledgerdesk_writer_group_events_sum 5"),
            "{text}"
        );
        assert!(
            text.contains("ledgerdesk_writer_commit_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("ledgerdesk_writer_groups_failed_total 0"),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn two_instances_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.observe("GET", "/healthz", 200, Duration::from_millis(1));
        assert!(a.render().contains("route=\"/healthz\",status=\"200\"} 1"));
        assert!(!b.render().contains("route=\"/healthz\""));
    }

    #[test]
    fn renders_projection_failures_state_and_lag() {
        let text = text(&projection_families(
            &[ProjectionHealth {
                name: "tickets",
                position: 7,
                state: WorkerState::Failed,
                failures_total: 2,
            }],
            10,
        ));
        assert!(text.contains("ledgerdesk_projection_failures_total{projection=\"tickets\"} 2"));
        assert!(text.contains("ledgerdesk_projection_failed{projection=\"tickets\"} 1"));
        assert!(text.contains("ledgerdesk_projection_position{projection=\"tickets\"} 7"));
        assert!(text.contains("ledgerdesk_projection_lag_events{projection=\"tickets\"} 3"));
    }
}
