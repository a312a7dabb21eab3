//! `regioncl plot RUN_DIR`: PNG charts of a run's `metrics.jsonl` (read as the trainer's typed
//! records) against the global step: `loss.png` (the total and every term the method logged:
//! instance, region, DenseCL's dense term), `lr.png`, `throughput.png` (img/s), `data_wait.png`
//! (the data-wait share), `knn.png` (k-NN top-1 of the online monitor, when the run has it) and
//! `overview.png` (all of them on one page), written to `RUN_DIR/plots/`. A run killed while
//! writing its last line is plotted without that line, with a warning; a file without step records
//! is an error.
//!
//! Text is rendered with ab_glyph from a TrueType font found at run time (`REGIONCL_FONT`, else
//! DejaVu Sans / Liberation Sans / any `.ttf` under the usual font directories); on a machine with
//! no font at all the charts are drawn without text, and a warning says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use clap::Args;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use regioncl_trainer::{LogRecord, RunLog, read_metrics};

use super::compare::Summary;

/// Arguments of `regioncl plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directory (with metrics.jsonl).
    #[arg(value_name = "RUN_DIR")]
    run_dir: PathBuf,
    /// Output directory (default: RUN_DIR/plots).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Runs `regioncl plot`.
pub fn run(args: PlotArgs) -> Result<()> {
    let out = args.out.unwrap_or_else(|| args.run_dir.join("plots"));
    for p in write_plots(&args.run_dir, &out)? {
        println!("{}", p.display());
    }
    Ok(())
}

/// One named line: (step, value) points.
type Series = (String, Vec<(f64, f64)>);

const FAMILY: &str = "sans-serif";
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Registers a TrueType font with plotters once; false when none was found.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("REGIONCL_FONT").map(PathBuf::from).into_iter().collect();
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "/Library/Fonts/Arial.ttf",
        ] {
            candidates.push(p.into());
        }
        for dir in ["/usr/share/fonts", "/usr/local/share/fonts"] {
            find_ttf(Path::new(dir), 4, &mut candidates);
        }
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        eprintln!("regioncl plot: warning: no TrueType font found (set REGIONCL_FONT); charts without text");
        false
    })
}

fn find_ttf(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && depth > 0 {
            find_ttf(&p, depth - 1, out);
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
}

/// The series of a run: loss terms, lr, throughput, data wait, k-NN top-1 per k.
struct Metrics {
    loss: Vec<Series>,
    lr: Vec<Series>,
    throughput: Vec<Series>,
    data_wait: Vec<Series>,
    knn: Vec<Series>,
}

/// The charts' series of a run's typed records, against the number of steps done.
fn series(log: &RunLog) -> Metrics {
    let x = |step: u64| step as f64 + 1.0;
    let one = |name: &str, y: &dyn Fn(&LogRecord) -> f64| {
        vec![(name.to_string(), log.steps.iter().map(|r| (x(r.step), y(r))).collect())]
    };
    let loss = log
        .loss_curves()
        .into_iter()
        .map(|(name, points)| {
            let finite = points.into_iter().filter(|(_, y)| y.is_finite());
            (name.to_string(), finite.map(|(s, y)| (x(s), y)).collect())
        })
        .collect();
    let mut knn: Vec<Series> = Vec::new();
    for r in &log.knn {
        for a in &r.knn {
            let name = format!("k={} top-1 %", a.k);
            let point = (x(r.step), 100.0 * a.top1);
            match knn.iter_mut().find(|(n, _)| *n == name) {
                Some((_, points)) => points.push(point),
                None => knn.push((name, vec![point])),
            }
        }
    }
    Metrics {
        loss,
        lr: one("lr", &|r| r.lr),
        throughput: one("img/s", &|r| r.img_per_s),
        data_wait: one("data wait %", &|r| 100.0 * r.data_wait),
        knn,
    }
}

fn bounds(series: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return None;
    }
    let pad = ((y1 - y0) * 0.05).max(y1.abs() * 1e-3).max(1e-9);
    Some(((x0.min(x1 - 1.0), x1), (y0 - pad, y1 + pad)))
}

/// Draws one line chart into `area`.
fn chart(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<()> {
    let Some(((x0, x1), (y0, y1))) = bounds(series) else { return Ok(()) };
    let text = font_ready();
    let mut builder = ChartBuilder::on(area);
    builder.margin(12).x_label_area_size(if text { 40 } else { 8 }).y_label_area_size(if text {
        64
    } else {
        8
    });
    if text {
        builder.caption(title, (FAMILY, 20));
    }
    let mut c = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut mesh = c.configure_mesh();
    if text {
        mesh.x_desc("step").y_desc(y_desc).label_style((FAMILY, 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if pts.len() < 40 {
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let line = c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)));
        let line = line.map_err(|e| anyhow::anyhow!("{e}"))?;
        if text {
            line.label(name.as_str()).legend(move |p| legend_mark(p, color));
        }
    }
    if text && series.len() > 1 {
        draw_legend(&mut c, SeriesLabelPosition::MiddleRight)?;
    }
    Ok(())
}

/// A legend entry's mark: a short line in the series' colour.
fn legend_mark((x, y): (i32, i32), color: RGBColor) -> PathElement<(i32, i32)> {
    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

/// A chart of this module: f64 axes on a bitmap.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws the legend box of `c` at `position`, in the charts' style.
fn draw_legend<'b>(c: &mut Chart<'b, 'b>, position: SeriesLabelPosition) -> Result<()> {
    c.configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Draws into an RGB buffer and writes it as a PNG (with the `image` crate, so plotters needs no
/// image encoder of its own).
fn png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).context("chart buffer size")?;
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

/// Writes the charts of `run_dir/metrics.jsonl` into `out`; returns the files written. A last line
/// cut off by a kill is skipped with a warning.
///
/// # Errors
/// A missing or malformed metrics file, one without step records, or a PNG that cannot be
/// written.
pub fn write_plots(run_dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let path = run_dir.join("metrics.jsonl");
    let log = read_metrics(&path)?;
    if let Some(line) = log.torn_last_line {
        eprintln!(
            "regioncl plot: warning: {}: line {line} is cut off (the run was stopped while \
             writing it); skipped",
            path.display()
        );
    }
    anyhow::ensure!(!log.steps.is_empty(), "{}: no step records to plot", path.display());
    let m = series(&log);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut panels: Vec<(&str, &str, &str, &[Series])> = vec![
        ("loss", "Loss terms", "loss", &m.loss),
        ("lr", "Learning rate", "lr", &m.lr),
        ("throughput", "Throughput", "images / s", &m.throughput),
        ("data_wait", "Data wait", "% of step time", &m.data_wait),
    ];
    if !m.knn.is_empty() {
        panels.push(("knn", "k-NN accuracy (online monitor)", "top-1 %", &m.knn));
    }
    let mut written = Vec::new();
    for (name, title, y, series) in &panels {
        let path = out.join(format!("{name}.png"));
        png(&path, (800, 500), |a| chart(a, title, y, series))?;
        written.push(path);
    }
    let path = out.join("overview.png");
    let rows = panels.len().div_ceil(2);
    png(&path, (1400, 450 * rows as u32), |root| {
        for (area, (_, title, y, series)) in root.split_evenly((rows, 2)).iter().zip(&panels) {
            chart(area, title, y, series)?;
        }
        Ok(())
    })?;
    written.push(path);
    Ok(written)
}

/// One method's values of each metric of a comparison (one value per seed), for
/// [`write_comparison`].
pub struct MethodValues {
    /// The method's display name.
    pub name: String,
    /// Per metric, in `metrics` order, the top-1 accuracy in `[0, 1]` of each seed.
    pub values: Vec<Vec<f64>>,
}

/// Writes `path`, a PNG of a comparison: per metric, each method's seeds as small circles and
/// their mean ± standard deviation as a bar with whiskers, side by side.
///
/// # Errors
/// A PNG that cannot be written.
pub fn write_comparison(path: &Path, metrics: &[String], methods: &[MethodValues]) -> Result<()> {
    let pct: Vec<f64> =
        methods.iter().flat_map(|m| m.values.iter().flatten()).map(|v| 100.0 * v).collect();
    let (lo, hi) = pct.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    anyhow::ensure!(lo <= hi, "no values to plot");
    let pad = ((hi - lo) * 0.1).max(0.5);
    let (y0, y1) = (lo - 2.0 * pad, hi + pad);
    let n = metrics.len() as f64;
    let width = (180 * metrics.len()).max(600) as u32;
    png(path, (width, 520), |area| {
        let text = font_ready();
        let mut builder = ChartBuilder::on(area);
        builder.margin(12).x_label_area_size(8).y_label_area_size(if text { 64 } else { 8 });
        if text {
            builder.caption("Comparison at equal budget (mean ± std over seeds)", (FAMILY, 20));
        }
        let mut c = builder
            .build_cartesian_2d(-0.5..n - 0.5, y0..y1)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut mesh = c.configure_mesh();
        mesh.disable_x_mesh().x_labels(0);
        if text {
            mesh.y_desc("top-1 %").label_style((FAMILY, 14));
        } else {
            mesh.y_labels(0);
        }
        mesh.draw().map_err(|e| anyhow::anyhow!("{e}"))?;
        let step = 0.6 / methods.len().max(1) as f64;
        for (j, m) in methods.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let dx = (j as f64 - (methods.len() as f64 - 1.0) / 2.0) * step;
            let mut bars = Vec::new();
            let mut seeds = Vec::new();
            for (i, values) in m.values.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
                let x = i as f64 + dx;
                let v: Vec<f64> = values.iter().map(|v| 100.0 * v).collect();
                let Summary { mean, std, .. } = Summary::of(&v);
                bars.push(ErrorBar::new_vertical(
                    x,
                    mean - std,
                    mean,
                    mean + std,
                    color.filled().stroke_width(2),
                    12,
                ));
                seeds.extend(v.into_iter().map(|y| Circle::new((x + step / 4.0, y), 3, color)));
            }
            let drawn = c.draw_series(bars).map_err(|e| anyhow::anyhow!("{e}"))?;
            if text {
                drawn.label(m.name.as_str()).legend(move |p| legend_mark(p, color));
            }
            c.draw_series(seeds).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if text {
            let label = (FAMILY, 15).into_font().color(&BLACK);
            let names = metrics.iter().enumerate().map(|(i, name)| {
                Text::new(name.clone(), (i as f64 - 0.3, y0 + 0.6 * pad), label.clone())
            });
            c.draw_series(names).map_err(|e| anyhow::anyhow!("{e}"))?;
            draw_legend(&mut c, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    })
}
