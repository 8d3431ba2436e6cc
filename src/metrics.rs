//! Prometheus metrics: requests, open connections, deliveries and bytes sent, each
//! labelled by transport, plus messages published and the standard `process_*` set
//! (CPU seconds, resident memory, open files).
//!
//! Label lookups happen once, when a transport's handles are made; the hot path only
//! bumps atomics.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// One transport's handles.
#[derive(Clone, Debug)]
pub struct TransportMetrics {
    pub requests: IntCounter,
    pub open_connections: IntGauge,
    pub deliveries: IntCounter,
    pub bytes_sent: IntCounter,
}

impl TransportMetrics {
    /// Counts `messages` delivered in `bytes` bytes of body.
    pub fn delivered(&self, messages: usize, bytes: usize) {
        self.deliveries.inc_by(messages as u64);
        self.bytes_sent.inc_by(bytes as u64);
    }
}

pub struct Metrics {
    registry: Registry,
    transports: Vec<(&'static str, TransportMetrics)>,
    pub messages_published: IntCounter,
}

impl Metrics {
    /// `threads`: the runtime's worker threads, published so that a result records
    /// what the server ran on.
    pub fn new(transports: &[&'static str], threads: usize) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &["transport"]).unwrap();
            registry.register(Box::new(v.clone())).unwrap();
            v
        };
        let requests = counter("lab_requests_total", "HTTP requests, by transport");
        let deliveries = counter(
            "lab_deliveries_total",
            "Messages delivered to readers, by transport",
        );
        let bytes_sent = counter(
            "lab_bytes_sent_total",
            "Body bytes written to readers, by transport (headers and WebSocket framing not included)",
        );
        let open = IntGaugeVec::new(
            Opts::new(
                "lab_open_connections",
                "Open SSE streams, WebSockets and held long polls, by transport",
            ),
            &["transport"],
        )
        .unwrap();
        registry.register(Box::new(open.clone())).unwrap();
        let messages_published = IntCounter::new(
            "lab_messages_published_total",
            "Messages accepted into rooms",
        )
        .unwrap();
        registry
            .register(Box::new(messages_published.clone()))
            .unwrap();
        registry
            .register(Box::new(crate::process_stats::ProcessStats::new()))
            .unwrap();
        let runtime_threads = IntGauge::new(
            "lab_runtime_threads",
            "Worker threads of the server's async runtime (--threads)",
        )
        .unwrap();
        runtime_threads.set(threads as i64);
        registry.register(Box::new(runtime_threads)).unwrap();

        let transports = transports
            .iter()
            .map(|&name| {
                (
                    name,
                    TransportMetrics {
                        requests: requests.with_label_values(&[name]),
                        open_connections: open.with_label_values(&[name]),
                        deliveries: deliveries.with_label_values(&[name]),
                        bytes_sent: bytes_sent.with_label_values(&[name]),
                    },
                )
            })
            .collect();
        Metrics {
            registry,
            transports,
            messages_published,
        }
    }

    /// The handles of a registered transport.
    pub fn transport(&self, name: &str) -> &TransportMetrics {
        self.transports
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m)
            .unwrap_or_else(|| panic!("transport {name} is not registered"))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        String::from_utf8(out).expect("Prometheus text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_and_process_metrics() {
        let m = Metrics::new(&["poll", "ws"], 2);
        m.transport("ws").delivered(3, 120);
        m.messages_published.inc();
        let text = m.render();
        assert!(text.contains("lab_deliveries_total{transport=\"ws\"} 3"));
        assert!(text.contains("lab_bytes_sent_total{transport=\"ws\"} 120"));
        assert!(text.contains("lab_deliveries_total{transport=\"poll\"} 0"));
        assert!(text.contains("lab_messages_published_total 1"));
        assert!(text.contains("lab_runtime_threads 2"));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.contains("process_cpu_seconds_total"));
    }
}
