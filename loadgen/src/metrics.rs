//! The server's `/metrics`, read before and after the counted window: just the
//! figures the report needs, from the Prometheus text format.

use std::collections::BTreeMap;

use crate::conn::Http;
use crate::error::ClientError;
use crate::target::Target;

/// One reading of a server's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    /// `lab_runtime_threads`: the server's worker threads.
    pub threads: Option<f64>,
    /// `lab_bytes_sent_total` by transport label.
    pub bytes_sent: BTreeMap<String, f64>,
    /// `lab_deliveries_total` by transport label.
    pub deliveries: BTreeMap<String, f64>,
}

impl Snapshot {
    /// Reads the figures out of Prometheus text; lines it does not know are skipped.
    pub fn parse(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let transport = || {
                let rest = labels.split("transport=\"").nth(1)?;
                Some(rest.split('"').next()?.to_owned())
            };
            match name {
                "process_cpu_seconds_total" => s.cpu_seconds = Some(value),
                "process_resident_memory_bytes" => s.rss_bytes = Some(value),
                "lab_runtime_threads" => s.threads = Some(value),
                "lab_bytes_sent_total" => {
                    if let Some(t) = transport() {
                        s.bytes_sent.insert(t, value);
                    }
                }
                "lab_deliveries_total" => {
                    if let Some(t) = transport() {
                        s.deliveries.insert(t, value);
                    }
                }
                _ => {}
            }
        }
        s
    }

    /// Fetches and parses `/metrics`; CPU and memory from /proc when the server is
    /// our child.
    pub async fn fetch(target: &Target) -> Result<Snapshot, ClientError> {
        let mut http = Http::open(target, None, Default::default()).await?;
        let body = http.get_body("/metrics").await?;
        let mut s = Snapshot::parse(&String::from_utf8_lossy(&body));
        if let Some((cpu, rss)) = target.pid.and_then(crate::machine::process_usage) {
            s.cpu_seconds = Some(cpu);
            s.rss_bytes = Some(rss);
        }
        Ok(s)
    }

    /// The sum of `self - before` over several targets' readings.
    pub fn delta(pairs: &[(Snapshot, Snapshot)]) -> Snapshot {
        let mut d = Snapshot::default();
        for (before, after) in pairs {
            let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
            d.cpu_seconds = sum(d.cpu_seconds, diff(after.cpu_seconds, before.cpu_seconds));
            // Memory and threads are levels, not counters: the reading at the end.
            d.rss_bytes = sum(d.rss_bytes, after.rss_bytes);
            d.threads = sum(d.threads, after.threads);
            for (t, v) in &after.bytes_sent {
                *d.bytes_sent.entry(t.clone()).or_default() +=
                    v - before.bytes_sent.get(t).unwrap_or(&0.0);
            }
            for (t, v) in &after.deliveries {
                *d.deliveries.entry(t.clone()).or_default() +=
                    v - before.deliveries.get(t).unwrap_or(&0.0);
            }
        }
        d
    }
}

fn sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP lab_bytes_sent_total x\n# TYPE lab_bytes_sent_total counter\n\
        lab_bytes_sent_total{transport=\"sse\"} 300\nlab_bytes_sent_total{transport=\"ws\"} 1e3\n\
        lab_deliveries_total{transport=\"ws\"} 10\nprocess_cpu_seconds_total 1.5\n\
        process_resident_memory_bytes 2048\nlab_requests_total{transport=\"ws\"} 4\n\
        lab_runtime_threads 2\n";

    #[test]
    fn reads_the_figures_and_subtracts_a_reading() {
        let after = Snapshot::parse(TEXT);
        assert_eq!(after.cpu_seconds, Some(1.5));
        assert_eq!(after.rss_bytes, Some(2048.0));
        assert_eq!(after.bytes_sent["ws"], 1000.0);
        assert_eq!(after.deliveries["ws"], 10.0);
        assert_eq!(after.threads, Some(2.0));
        let before = Snapshot::parse(
            "process_cpu_seconds_total 0.5\nlab_bytes_sent_total{transport=\"ws\"} 400\n",
        );
        let d = Snapshot::delta(&[(before, after)]);
        assert_eq!(d.cpu_seconds, Some(1.0));
        assert_eq!(d.bytes_sent["ws"], 600.0);
        assert_eq!(d.bytes_sent["sse"], 300.0);
        assert_eq!(d.threads, Some(2.0), "a level, read at the end");
        assert_eq!(Snapshot::delta(&[]).cpu_seconds, None);
    }
}
