//! The server's `/metrics`, read before and after the counted window: just the
//! figures the report needs, from the Prometheus text format. A child server's CPU and
//! memory come from /proc instead, read at the instant the loadgen reads its own.

use std::collections::BTreeMap;

use crate::conn::Http;
use crate::error::ClientError;
use crate::machine::CpuTime;
use crate::target::Target;

/// One reading of a server's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub cpu_seconds: Option<f64>,
    /// The kernel's part of `cpu_seconds`: known for a child server only (/proc).
    pub system_cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    /// `lab_runtime_threads`: the server's worker threads.
    pub threads: Option<f64>,
    /// `lab_bytes_sent_total` by transport label.
    pub bytes_sent: BTreeMap<String, f64>,
    /// `lab_deliveries_total` by transport label.
    pub deliveries: BTreeMap<String, f64>,
    /// Whether `/metrics` answered: without it the counters above are unknown, not 0.
    pub from_metrics: bool,
}

impl Snapshot {
    /// Reads the figures out of Prometheus text; lines it does not know are skipped.
    pub fn parse(text: &str) -> Snapshot {
        let mut s = Snapshot {
            from_metrics: true,
            ..Snapshot::default()
        };
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

    /// A child server's CPU seconds and resident bytes from /proc, read at once. Taken
    /// beside the loadgen's own reading, before `/metrics` is asked: a server under
    /// load may take a while to answer, and its CPU interval would then start later
    /// (or end later) than the loadgen's and the counted window's.
    pub fn local(target: &Target) -> Option<(CpuTime, f64)> {
        target.pid.and_then(crate::machine::process_usage)
    }

    /// Fetches and parses `/metrics`, with `local` (see [`Snapshot::local`]) in place
    /// of its CPU and memory. A child's /proc reading stands when `/metrics` fails.
    pub async fn fetch(
        target: &Target,
        local: Option<(CpuTime, f64)>,
    ) -> Result<Snapshot, ClientError> {
        let body = async {
            let mut http = Http::open(target, None, Default::default()).await?;
            http.get_body("/metrics").await
        }
        .await;
        let mut s = match (body, local) {
            (Ok(body), _) => Snapshot::parse(&String::from_utf8_lossy(&body)),
            (Err(_), Some(_)) => Snapshot::default(),
            (Err(e), None) => return Err(e),
        };
        if let Some((cpu, rss)) = local {
            s.cpu_seconds = Some(cpu.total());
            s.system_cpu_seconds = Some(cpu.system);
            s.rss_bytes = Some(rss);
        }
        Ok(s)
    }

    /// The sum of `after - before` over several targets' readings. A figure one of
    /// them lacks is unknown for all: a sum over some would be divided by every
    /// target's deliveries.
    pub fn delta(pairs: &[(Snapshot, Snapshot)]) -> Snapshot {
        let total = |figure: &dyn Fn(&Snapshot, &Snapshot) -> Option<f64>| {
            (!pairs.is_empty())
                .then(|| pairs.iter().map(|(b, a)| figure(b, a)).sum::<Option<f64>>())
                .flatten()
        };
        let from_metrics =
            !pairs.is_empty() && pairs.iter().all(|(b, a)| b.from_metrics && a.from_metrics);
        let mut d = Snapshot {
            cpu_seconds: total(&|b, a| Some(a.cpu_seconds? - b.cpu_seconds?)),
            system_cpu_seconds: total(&|b, a| Some(a.system_cpu_seconds? - b.system_cpu_seconds?)),
            // Memory and threads are levels, not counters: the reading at the end.
            rss_bytes: total(&|_, a| a.rss_bytes),
            threads: total(&|_, a| a.threads),
            from_metrics,
            ..Snapshot::default()
        };
        if from_metrics {
            d.bytes_sent = by_label(pairs, |s| &s.bytes_sent);
            d.deliveries = by_label(pairs, |s| &s.deliveries);
        }
        d
    }
}

/// `after - before` summed over the targets, for each label every target's reading at
/// the end has (a counter a target has not shown yet at the start is 0 there).
fn by_label(
    pairs: &[(Snapshot, Snapshot)],
    series: impl Fn(&Snapshot) -> &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    let Some((_, first)) = pairs.first() else {
        return BTreeMap::new();
    };
    series(first)
        .keys()
        .filter(|label| pairs.iter().all(|(_, a)| series(a).contains_key(*label)))
        .map(|label| {
            let total = pairs
                .iter()
                .map(|(b, a)| series(a)[label] - series(b).get(label).unwrap_or(&0.0))
                .sum();
            (label.clone(), total)
        })
        .collect()
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

    #[test]
    fn a_figure_one_target_lacks_is_unknown_for_all() {
        let with = Snapshot::parse(
            "process_cpu_seconds_total 2\nlab_bytes_sent_total{transport=\"ws\"} 9\n\
             lab_bytes_sent_total{transport=\"sse\"} 500\n",
        );
        let without = Snapshot::parse("lab_bytes_sent_total{transport=\"ws\"} 9\n");
        let d = Snapshot::delta(&[
            (Snapshot::parse(TEXT), with.clone()),
            (Snapshot::parse(TEXT), without),
        ]);
        assert_eq!(d.cpu_seconds, None, "not the first target's alone");
        assert_eq!(d.bytes_sent["ws"], -1982.0);
        assert!(
            !d.bytes_sent.contains_key("sse"),
            "the second target shows no sse bytes: {d:?}"
        );
        // A reading without /metrics (a child's /proc only) knows no counters.
        let proc_only = Snapshot {
            cpu_seconds: Some(3.0),
            ..Snapshot::default()
        };
        let d = Snapshot::delta(&[(proc_only.clone(), with)]);
        assert_eq!(d.cpu_seconds, Some(-1.0));
        // The kernel's part is known only where every reading has it.
        let split = Snapshot {
            system_cpu_seconds: Some(1.0),
            ..proc_only.clone()
        };
        let d = Snapshot::delta(&[(split.clone(), split.clone())]);
        assert_eq!(d.system_cpu_seconds, Some(0.0));
        let d = Snapshot::delta(&[(split.clone(), split), (proc_only.clone(), proc_only)]);
        assert_eq!(d.system_cpu_seconds, None, "one target lacks it");
        assert!(d.bytes_sent.is_empty() && !d.from_metrics);
    }

    #[test]
    fn a_childs_proc_reading_stands_when_metrics_does_not_answer() {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target::parse(&listener.local_addr().unwrap().to_string()).unwrap();
        drop(listener);
        crate::runner::block_on(async {
            let cpu = CpuTime {
                user: 1.0,
                system: 0.5,
            };
            let s = Snapshot::fetch(&target, Some((cpu, 4096.0))).await.unwrap();
            assert_eq!((s.cpu_seconds, s.rss_bytes), (Some(1.5), Some(4096.0)));
            assert_eq!(s.system_cpu_seconds, Some(0.5));
            assert!(!s.from_metrics);
            assert!(Snapshot::fetch(&target, None).await.is_err());
        });
    }
}
