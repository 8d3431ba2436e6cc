//! Statistics a worker records while users run, merged once at the end: latency
//! histograms (HdrHistogram, microseconds), connect times, and counters by transport.

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use serde::Serialize;

/// Largest value a histogram holds (one hour in microseconds); larger ones saturate.
const MAX_US: u64 = 3_600_000_000;

/// A histogram of microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    pub count: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
            count: h.len(),
        }
    }
}

/// A histogram in HdrHistogram's V2 serialized form, uncompressed (`V2Serializer`), in
/// base64, for merging and re-plotting runs later.
pub fn to_base64(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("serializing into a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// The histogram [`to_base64`] wrote, or `None` if `text` is not one.
pub fn from_base64(text: &str) -> Option<Histogram<u64>> {
    use hdrhistogram::serialization::Deserializer;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Deserializer::new().deserialize(&mut &bytes[..]).ok()
}

/// What one transport's users on one worker recorded.
#[derive(Debug, Clone)]
pub struct TransportStats {
    /// Receive time minus `client_ts` (the actual send).
    pub latency: Histogram<u64>,
    /// Receive time minus the message's due time.
    pub latency_from_due: Histogram<u64>,
    /// User start to subscription answered.
    pub connect: Histogram<u64>,
    pub requests: u64,
    pub empty: u64,
    pub connections: u64,
    pub reconnects: u64,
    pub bytes_received: u64,
    /// Bytes received in the counted window that carried messages due before it (a
    /// short poll's first answer holds up to an interval of them; a stream behind at
    /// the window's start reads the warm-up's last messages in it): taken off
    /// `bytes_received`, which is divided by counted deliveries.
    pub bytes_before_window: u64,
    pub errors: BTreeMap<&'static str, u64>,
}

impl Default for TransportStats {
    fn default() -> Self {
        TransportStats {
            latency: histogram(),
            latency_from_due: histogram(),
            connect: histogram(),
            requests: 0,
            empty: 0,
            connections: 0,
            reconnects: 0,
            bytes_received: 0,
            bytes_before_window: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl TransportStats {
    pub fn error(&mut self, kind: &'static str) {
        self.errors_of(kind, 1);
    }

    /// Counts `n` errors of `kind`.
    pub fn errors_of(&mut self, kind: &'static str, n: u64) {
        *self.errors.entry(kind).or_default() += n;
    }

    pub fn merge(&mut self, o: &TransportStats) {
        self.latency.add(&o.latency).expect("same bounds");
        self.latency_from_due
            .add(&o.latency_from_due)
            .expect("same bounds");
        self.connect.add(&o.connect).expect("same bounds");
        self.requests += o.requests;
        self.empty += o.empty;
        self.connections += o.connections;
        self.reconnects += o.reconnects;
        self.bytes_received += o.bytes_received;
        self.bytes_before_window += o.bytes_before_window;
        for (k, v) in &o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(
            (s.p50, s.p90, s.p99, s.p999, s.max),
            (500, 900, 990, 999, 1000)
        );
        assert_eq!(s.mean, 500.5);
        assert_eq!(s.count, 1000);
        assert_eq!(Summary::of(&histogram()), Summary::default());
    }

    #[test]
    fn merged_workers_equal_one_histogram_and_survive_base64() {
        let (mut a, mut b) = (TransportStats::default(), TransportStats::default());
        for v in 0..100u64 {
            a.latency.record(100 + v).unwrap();
            b.latency.record(10_000 + v).unwrap();
        }
        a.error("connect");
        b.error("connect");
        b.requests = 3;
        a.merge(&b);
        assert_eq!(a.latency.len(), 200);
        assert_eq!(a.errors["connect"], 2);
        assert_eq!(a.requests, 3);
        let s = Summary::of(&a.latency);
        assert_eq!(s.p50, 199);
        assert!(s.p90 >= 10_079 && s.p90 <= 10_080, "{}", s.p90);

        let bytes = base64::engine::general_purpose::STANDARD
            .decode(to_base64(&a.latency))
            .unwrap();
        let back: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
        assert_eq!(back, a.latency);
        assert_eq!(from_base64(&to_base64(&a.latency)), Some(a.latency.clone()));
        assert_eq!(from_base64("not base64!"), None);
    }
}
