//! Prometheus metrics, hand-rolled: requests by route and status, a latency
//! histogram by route, and the events appended to the log.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use ledgerdesk_projections::{ProjectionHealth, WorkerState};
use tokio::sync::watch;

/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(&'static str, String, u16), u64>,
    latency: BTreeMap<(&'static str, String), Histogram>,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
    head: watch::Receiver<u64>,
    head_at_start: u64,
}

impl Metrics {
    /// Counting appends from the store's head as it is now.
    pub fn new(head: watch::Receiver<u64>) -> Self {
        let head_at_start = *head.borrow();
        Self {
            inner: Mutex::default(),
            head,
            head_at_start,
        }
    }

    /// Record one answered request. `route` is the matched pattern.
    pub fn observe(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner
            .requests
            .entry((method, route.to_string(), status))
            .or_default() += 1;
        let h = inner
            .latency
            .entry((method, route.to_string()))
            .or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP ledgerdesk_http_requests_total HTTP requests answered, by method, route and status.\n");
        out.push_str("# TYPE ledgerdesk_http_requests_total counter\n");
        for ((method, route, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "ledgerdesk_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP ledgerdesk_http_request_duration_seconds Time to answer, by method and route.\n");
        out.push_str("# TYPE ledgerdesk_http_request_duration_seconds histogram\n");
        for ((method, route), h) in &inner.latency {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ledgerdesk_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "ledgerdesk_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "ledgerdesk_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "ledgerdesk_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        drop(inner);
        let head = *self.head.borrow();
        out.push_str("# HELP ledgerdesk_events_appended_total Events appended to the log since this process started.\n");
        out.push_str("# TYPE ledgerdesk_events_appended_total counter\n");
        let _ = writeln!(
            out,
            "ledgerdesk_events_appended_total {}",
            head.saturating_sub(self.head_at_start)
        );
        out.push_str("# HELP ledgerdesk_event_log_head_position The position of the last event in the log.\n");
        out.push_str("# TYPE ledgerdesk_event_log_head_position gauge\n");
        let _ = writeln!(out, "ledgerdesk_event_log_head_position {head}");
        out
    }
}

/// The projections' metrics, appended to [`Metrics::render`]'s text:
/// failures counted per projection (each time one is marked failed in this
/// process), whether it is failed now, and the position it has reached.
pub fn render_projections(out: &mut String, projections: &[ProjectionHealth]) {
    out.push_str("# HELP ledgerdesk_projection_failures_total Times a projection was marked failed (an event it could not apply) since this process started.\n");
    out.push_str("# TYPE ledgerdesk_projection_failures_total counter\n");
    for p in projections {
        let _ = writeln!(
            out,
            "ledgerdesk_projection_failures_total{{projection=\"{}\"}} {}",
            escape(p.name),
            p.failures_total
        );
    }
    out.push_str("# HELP ledgerdesk_projection_failed Whether the projection's worker in this process is failed (1) or not (0).\n");
    out.push_str("# TYPE ledgerdesk_projection_failed gauge\n");
    for p in projections {
        let _ = writeln!(
            out,
            "ledgerdesk_projection_failed{{projection=\"{}\"}} {}",
            escape(p.name),
            u8::from(p.state == WorkerState::Failed)
        );
    }
    out.push_str(
        "# HELP ledgerdesk_projection_position The log position the projection has reached.\n",
    );
    out.push_str("# TYPE ledgerdesk_projection_position gauge\n");
    for p in projections {
        let _ = writeln!(
            out,
            "ledgerdesk_projection_position{{projection=\"{}\"}} {}",
            escape(p.name),
            p.position
        );
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let (tx, rx) = watch::channel(10);
        let m = Metrics::new(rx);
        m.observe("GET", "/healthz", 200, Duration::from_millis(3));
        tx.send_replace(15);
        let text = m.render();
        assert!(text.contains(
            "ledgerdesk_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"0.0025\"} 0"));
        assert!(text.contains("ledgerdesk_events_appended_total 5"));
    }

    #[test]
    fn renders_projection_failures_and_state() {
        let mut text = String::new();
        render_projections(
            &mut text,
            &[ProjectionHealth {
                name: "tickets",
                position: 7,
                state: WorkerState::Failed,
                failures_total: 2,
            }],
        );
        assert!(text.contains("ledgerdesk_projection_failures_total{projection=\"tickets\"} 2"));
        assert!(text.contains("ledgerdesk_projection_failed{projection=\"tickets\"} 1"));
        assert!(text.contains("ledgerdesk_projection_position{projection=\"tickets\"} 7"));
    }
}
