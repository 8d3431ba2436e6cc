//! SVG line charts of one figure against users, one line per mode through the
//! medians of the repeats, with the min-max band of the repeats shaded behind it.
//! Drawn with plotters' SVG backend; text is plain SVG `<text>`, so no font crate.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::points::{Figure, PointRuns, Spread};

/// What to draw.
pub struct Spec<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub figure: Figure,
    pub log_y: bool,
}

const SIZE: (u32, u32) = (640, 380);

/// The colour of a mode's line.
pub fn colour(mode: &str) -> RGBColor {
    match mode.trim_start_matches("mixed/") {
        "poll" => RGBColor(230, 120, 20),
        "long-poll" => RGBColor(140, 70, 170),
        "sse" => RGBColor(30, 110, 200),
        "ws" => RGBColor(20, 150, 70),
        _ => RGBColor(90, 90, 90),
    }
}

/// Per mode, `(log10 users, spread)` at `rate`, sorted by users. The x axis is linear
/// in log10(users) so that ticks sit on whole decades only (plotters' log axis labels
/// every in-between value, and they overlap).
fn series(
    points: &[PointRuns],
    modes: &[String],
    rate: f64,
    f: Figure,
) -> Vec<(String, Vec<(f64, Spread)>)> {
    modes
        .iter()
        .map(|m| {
            let mut s: Vec<(f64, Spread)> = points
                .iter()
                .filter(|p| &p.mode == m && p.rate == rate)
                .filter_map(|p| Some(((p.users.max(1) as f64).log10(), p.spread(f)?)))
                .collect();
            s.sort_by(|a, b| a.0.total_cmp(&b.0));
            (m.clone(), s)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// The chart as an SVG document, or `None` when no point has the figure.
pub fn svg(spec: &Spec, points: &[PointRuns], modes: &[String], rate: f64) -> Option<String> {
    let data = series(points, modes, rate, spec.figure);
    let all: Vec<&(f64, Spread)> = data.iter().flat_map(|(_, s)| s).collect();
    if all.is_empty() {
        return None;
    }
    let xmin = all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let xmax = all.iter().map(|p| p.0).fold(0.0, f64::max);
    let x = xmin - 0.25..xmax + 0.25;
    let ymax = all.iter().map(|p| p.1.max).fold(0.0, f64::max).max(1e-9);
    let mut out = String::new();
    let nx = |v: f64| (v - x.start) / (x.end - x.start);
    let drawn = if spec.log_y {
        let ymin = all
            .iter()
            .map(|p| p.1.min)
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let ymin = if ymin.is_finite() { ymin } else { ymax / 10.0 };
        // Whole decades at both ends: plotters labels a log axis at decades only, and
        // a range inside one decade would carry one label or none.
        let decade = |v: f64, round: fn(f64) -> f64| 10f64.powi(round(v.log10()) as i32);
        let y = decade(ymin / 1.5, f64::floor)..decade(ymax * 1.5, f64::ceil);
        let ny = |v: f64| (v.max(y.start).ln() - y.start.ln()) / (y.end.ln() - y.start.ln());
        let legend = corner(&all, nx, ny);
        draw(&mut out, spec, &data, legend, x.clone(), x, y.log_scale())
    } else {
        let top = ymax * 1.12;
        let legend = corner(&all, nx, |v| v / top);
        draw(&mut out, spec, &data, legend, x.clone(), x, 0.0..top)
    };
    drawn.ok().map(|()| out)
}

/// The corner of the plot where the legend covers the fewest points (positions
/// normalized to `[0, 1]` by `nx` and `ny`).
fn corner(
    all: &[&(f64, Spread)],
    nx: impl Fn(f64) -> f64,
    ny: impl Fn(f64) -> f64,
) -> SeriesLabelPosition {
    use SeriesLabelPosition::*;
    let covered = |left: bool, upper: bool| {
        all.iter()
            .flat_map(|(u, s)| [s.min, s.median, s.max].map(|v| (nx(*u), ny(v))))
            .filter(|&(x, y)| {
                (if left { x < 0.35 } else { x > 0.65 })
                    && (if upper { y > 0.55 } else { y < 0.45 })
            })
            .count()
    };
    [
        (UpperLeft, true, true),
        (UpperRight, false, true),
        (LowerRight, false, false),
        (LowerLeft, true, false),
    ]
    .into_iter()
    .min_by_key(|&(_, l, u)| covered(l, u))
    .map_or(UpperLeft, |c| c.0)
}

fn draw<X, Y>(
    out: &mut String,
    spec: &Spec,
    data: &[(String, Vec<(f64, Spread)>)],
    legend: SeriesLabelPosition,
    x_span: std::ops::Range<f64>,
    x: X,
    y: Y,
) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    // One x label per whole decade in the range.
    let decades = (x_span.end.floor() - x_span.start.ceil()).max(0.0) as usize + 1;
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(spec.title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("users")
        .y_desc(spec.y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 17))
        .y_labels(8)
        .x_labels(decades)
        .x_max_light_lines(0)
        .x_label_formatter(&decade)
        .y_label_formatter(&|v| short(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|x| e(&x))?;
    for (mode, s) in data {
        let c = colour(mode);
        let band: Vec<(f64, f64)> = s
            .iter()
            .map(|(u, sp)| (*u, sp.max))
            .chain(s.iter().rev().map(|(u, sp)| (*u, sp.min)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled())))
            .map_err(|x| e(&x))?;
        let line: Vec<(f64, f64)> = s.iter().map(|(u, sp)| (*u, sp.median)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(mode.as_str())
            .legend(move |(lx, ly)| {
                PathElement::new(vec![(lx, ly), (lx + 18, ly)], c.stroke_width(2))
            });
        chart
            .draw_series(line.into_iter().map(|p| Circle::new(p, 3, c.filled())))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// An x tick label: `10^v` users on whole decades, nothing in between.
fn decade(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 && *v >= 0.0 {
        crate::sweep::verdict::thousands(10f64.powi(v.round() as i32) as usize)
    } else {
        String::new()
    }
}

/// A tick label: few digits, no trailing zeros.
fn short(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::record::Record;

    #[test]
    fn a_chart_has_its_labels_lines_and_bands() {
        let mut points = Vec::new();
        for (mode, base) in [("ws", 1.0), ("sse", 2.0)] {
            for users in [10usize, 100, 1000] {
                let runs = (1..=3)
                    .map(|rep| Record {
                        mode: mode.into(),
                        users,
                        rate: 10.0,
                        repeat: rep,
                        p99_ms: base * users as f64 / 10.0 + rep as f64,
                        ..Record::default()
                    })
                    .collect();
                points.push(PointRuns {
                    mode: mode.into(),
                    users,
                    rate: 10.0,
                    runs,
                });
            }
        }
        let modes = vec!["ws".to_owned(), "sse".to_owned()];
        let spec = Spec {
            title: "p99 latency",
            y_label: "ms",
            figure: Figure::P99Ms,
            log_y: true,
        };
        let svg = svg(&spec, &points, &modes, 10.0).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        for text in [
            "p99 latency",
            "users",
            "ms",
            "ws",
            "sse",
            "10",
            "100",
            "1,000",
        ] {
            let text = format!(">\n{text}\n</text>");
            assert!(svg.contains(&text), "no {text} in the chart");
        }
        assert!(svg.matches("<polygon").count() >= 2);
        assert!(svg.contains("<polyline"));
        // A log axis whose values sit inside one decade still has a label at each end.
        let narrow: Vec<PointRuns> = points
            .iter()
            .cloned()
            .map(|mut p| {
                for r in &mut p.runs {
                    r.p99_ms = 2.0 + r.repeat as f64;
                }
                p
            })
            .collect();
        let svg = super::svg(&spec, &narrow, &modes, 10.0).unwrap();
        assert!(svg.contains(">\n1\n</text>"), "no label under the values");
        assert!(
            svg.matches(">\n10\n</text>").count() >= 2,
            "no label over the values"
        );
        let spec = Spec {
            log_y: false,
            figure: Figure::ServerCpuMsPer1k,
            ..spec
        };
        assert_eq!(super::svg(&spec, &points, &modes, 10.0), None);
        assert_eq!(short(2.50), "2.5");
        assert_eq!(short(1234.0), "1234");
    }
}
