//! The repeats of each point folded together: for every figure the median and the
//! min-max spread, which is what the report's lines, bands and tables show.

use super::record::Record;

/// Median and range of one figure over a point's repeats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Of the values present; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = Option<f64>>) -> Option<Spread> {
        let mut v: Vec<f64> = values
            .into_iter()
            .flatten()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// The figures a chart or table can show for a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    P50Ms,
    P95Ms,
    P99Ms,
    /// p99 counted from when each message was due, not when it was sent.
    DueP99Ms,
    RequestsPerDelivery,
    RequestsPerS,
    BytesPerDelivery,
    ServerCpuMsPer1k,
    LoadgenCpuMsPer1k,
    ServerKibPerUser,
    ConnectP50Ms,
}

impl Figure {
    pub fn of(self, r: &Record) -> Option<f64> {
        match self {
            Figure::P50Ms => Some(r.p50_ms),
            Figure::P95Ms => Some(r.p95_ms),
            Figure::P99Ms => Some(r.p99_ms),
            Figure::DueP99Ms => Some(r.due_p99_ms),
            Figure::RequestsPerDelivery => r.requests_per_delivery(),
            Figure::RequestsPerS => r.requests_per_s(),
            Figure::BytesPerDelivery => r.bytes_per_delivery(),
            Figure::ServerCpuMsPer1k => r.server_cpu_ms_per_1k(),
            Figure::LoadgenCpuMsPer1k => r.loadgen_cpu_ms_per_1k(),
            Figure::ServerKibPerUser => r.server_bytes_per_user().map(|b| b / 1024.0),
            Figure::ConnectP50Ms => Some(r.connect_p50_ms),
        }
    }
}

/// A mode at a user count and rate, with all its repeats.
#[derive(Debug, Clone)]
pub struct PointRuns {
    pub mode: String,
    pub users: usize,
    pub rate: f64,
    pub runs: Vec<Record>,
}

impl PointRuns {
    pub fn spread(&self, f: Figure) -> Option<Spread> {
        Spread::of(self.runs.iter().map(|r| f.of(r)))
    }

    pub fn median(&self, f: Figure) -> Option<f64> {
        self.spread(f).map(|s| s.median)
    }

    /// Sums over the repeats: (expected, received, lost, duplicated, out of order).
    pub fn deliveries(&self) -> [u64; 5] {
        self.runs.iter().fold([0; 5], |a, r| {
            [
                a[0] + r.expected,
                a[1] + r.received,
                a[2] + r.lost,
                a[3] + r.duplicated,
                a[4] + r.out_of_order,
            ]
        })
    }

    /// Errors of all repeats, `kind=count` joined.
    pub fn errors(&self) -> String {
        let mut all = std::collections::BTreeMap::<String, u64>::new();
        for r in &self.runs {
            for kv in r.errors.split(';').filter(|s| !s.is_empty()) {
                if let Some((k, v)) = kv.split_once('=') {
                    *all.entry(k.to_owned()).or_default() += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
        all.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Groups `records` by (mode, users, rate), in the order points first appear.
pub fn group(records: &[Record]) -> Vec<PointRuns> {
    let mut out: Vec<PointRuns> = Vec::new();
    for r in records {
        match out
            .iter_mut()
            .find(|p| p.mode == r.mode && p.users == r.users && p.rate == r.rate)
        {
            Some(p) => p.runs.push(r.clone()),
            None => out.push(PointRuns {
                mode: r.mode.clone(),
                users: r.users,
                rate: r.rate,
                runs: vec![r.clone()],
            }),
        }
    }
    out
}

/// The modes in `points`, in order of first appearance.
pub fn modes(points: &[PointRuns]) -> Vec<String> {
    let mut m: Vec<String> = Vec::new();
    for p in points {
        if !m.contains(&p.mode) {
            m.push(p.mode.clone());
        }
    }
    m
}

/// The rate most points share (the one charts against users are drawn for), and any
/// others.
pub fn rates(points: &[PointRuns]) -> Vec<f64> {
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for p in points {
        match counts.iter_mut().find(|(r, _)| *r == p.rate) {
            Some(c) => c.1 += 1,
            None => counts.push((p.rate, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts.into_iter().map(|(r, _)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges() {
        let s = Spread::of([Some(3.0), None, Some(1.0), Some(2.0)]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([Some(1.0), Some(4.0)]).unwrap().median, 2.5);
        assert_eq!(Spread::of([None]), None);
    }

    #[test]
    fn records_group_by_point() {
        let r = |mode: &str, users, repeat, p50_ms| Record {
            mode: mode.into(),
            users,
            rate: 10.0,
            repeat,
            p50_ms,
            errors: if repeat == 1 {
                "closed=2".into()
            } else {
                String::new()
            },
            ..Record::default()
        };
        let recs = [
            r("ws", 10, 1, 1.0),
            r("sse", 10, 1, 2.0),
            r("ws", 10, 2, 3.0),
        ];
        let g = group(&recs);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].runs.len(), 2);
        assert_eq!(g[0].median(Figure::P50Ms), Some(2.0));
        assert_eq!(g[0].errors(), "closed=2");
        assert_eq!(modes(&g), ["ws", "sse"]);
        assert_eq!(rates(&g), [10.0]);
    }
}
