//! `--plot`: throughput over time and the latency CDFs (append, and end to
//! end when consumers ran), drawn to an SVG file.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::{coord::Shift, prelude::*};

/// A drawing area of the SVG file.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws the throughput `timeline` (seconds, records/s) above the CDFs of
/// `append` and `e2e` (ns) to the SVG file `path`.
pub fn plot(
    path: &Path,
    timeline: &[(f64, f64)],
    append: &Histogram<u64>,
    e2e: &Histogram<u64>,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(400);
    throughput(&top, timeline).map_err(|e| err(&e))?;
    cdfs(&bottom, append, e2e).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Draws throughput over time.
fn throughput(
    area: &Area<'_>,
    timeline: &[(f64, f64)],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let max_t = timeline.last().map_or(1.0, |t| t.0).max(1.0);
    let max_rate = timeline.iter().map(|t| t.1).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("throughput (records/s)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_t, 0.0..max_rate * 1.1)?;
    chart.configure_mesh().x_desc("seconds").draw()?;
    chart.draw_series(LineSeries::new(timeline.iter().copied(), &BLUE))?;
    Ok(())
}

/// Draws the latency CDFs, on a log scale of microseconds.
fn cdfs(
    area: &Area<'_>,
    append: &Histogram<u64>,
    e2e: &Histogram<u64>,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let max_us = (append.max().max(e2e.max()) as f64 / 1e3).max(10.0);
    let mut chart = ChartBuilder::on(area)
        .caption("latency CDF", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d((1.0..max_us * 1.1).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("microseconds")
        .y_desc("fraction")
        .draw()?;
    for (h, name, color) in [(append, "append", BLUE), (e2e, "append to read", RED)] {
        if h.is_empty() {
            continue;
        }
        let points = (0..=1000).map(|i| {
            let q = f64::from(i) / 1000.0;
            ((h.value_at_quantile(q) as f64 / 1e3).max(1.0), q)
        });
        chart
            .draw_series(LineSeries::new(points, &color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
