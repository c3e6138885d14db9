//! The chart: grouped bars per step (one bar per driver or peer: the median), min-max
//! whiskers, log-scale time axis in milliseconds; drawn with plotters as SVG and PNG
//! (the PNG through plotters' RGB buffer and the `png` encoder).
//!
//! Text is rendered with a TrueType font read at run time (plotters' `ab_glyph`
//! backend, no fontconfig): `$LAYERCTL_BENCH_FONT`, else DejaVu Sans or Liberation Sans
//! from /usr/share/fonts (Debian: `fonts-dejavu-core`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::Results;

/// Pixel size of both charts.
const SIZE: (u32, u32) = (1600, 900);
/// Width of the legend column on the right, pixels.
const LEGEND_W: u32 = 330;

/// Where a TrueType font is looked for, in order.
const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

/// Bar colours: drivers first (strong), then peers (muted), by target order.
const DRIVER_COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];
const PEER_COLORS: [RGBColor; 6] = [
    RGBColor(127, 127, 127),
    RGBColor(255, 127, 14),
    RGBColor(188, 189, 34),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
];

/// Registers the font once (plotters keeps it for the process).
fn font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let from_env = std::env::var("LAYERCTL_BENCH_FONT").ok();
        let path = from_env
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES)
            .find(|p| Path::new(p).is_file())
            .ok_or_else(|| {
                format!(
                    "no TrueType font for the chart: set LAYERCTL_BENCH_FONT or install fonts-dejavu-core (looked at {})",
                    FONT_CANDIDATES.join(", ")
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("read font {path}: {e}"))?;
        // plotters wants 'static font data; this is done once per process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("font {path} is not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Draws `chart.svg` and `chart.png`.
pub fn draw(r: &Results, svg: &Path, png: &Path) -> anyhow::Result<()> {
    font()?;
    {
        let root = SVGBackend::new(svg, SIZE).into_drawing_area();
        draw_on(&root, r)?;
        root.present()
            .map_err(|e| anyhow!("write {}: {e:?}", svg.display()))?;
    }
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        draw_on(&root, r)?;
        root.present().map_err(|e| anyhow!("render png: {e:?}"))?;
    }
    let f = std::fs::File::create(png).with_context(|| format!("create {}", png.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .with_context(|| format!("write {}", png.display()))?;
    w.write_image_data(&buf)
        .with_context(|| format!("write {}", png.display()))?;
    w.finish()
        .with_context(|| format!("write {}", png.display()))?;
    Ok(())
}

fn color_of(r: &Results, target: &str) -> RGBColor {
    let drivers: Vec<&str> = r
        .targets
        .iter()
        .filter(|t| t.kind == "driver")
        .map(|t| t.name.as_str())
        .collect();
    let peers: Vec<&str> = r
        .targets
        .iter()
        .filter(|t| t.kind != "driver")
        .map(|t| t.name.as_str())
        .collect();
    if let Some(i) = drivers.iter().position(|d| *d == target) {
        DRIVER_COLORS[i % DRIVER_COLORS.len()]
    } else {
        let i = peers.iter().position(|d| *d == target).unwrap_or(0);
        PEER_COLORS[i % PEER_COLORS.len()]
    }
}

/// Axis label: 0.01, 0.1, 1, 10, 100, 1000 (no trailing zeros).
fn axis_ms(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Splits `s` into lines of at most `width` characters, at spaces where possible.
fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in s.split_whitespace() {
        let mut word = word.to_owned();
        while word.chars().count() > width {
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            out.push(head);
        }
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("draw chart: {e:?}")
}

fn draw_on<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &Results) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (main, legend) = root.split_horizontally(SIZE.0 - LEGEND_W);
    let steps: Vec<&str> = r
        .steps
        .iter()
        .copied()
        .filter(|s| r.results.iter().any(|x| x.step == *s))
        .collect();
    let lo = r
        .results
        .iter()
        .map(|x| x.min_ms)
        .fold(f64::INFINITY, f64::min)
        .max(1e-3);
    let hi = r.results.iter().map(|x| x.max_ms).fold(lo, f64::max);
    // Decade bounds, so the log axis shows whole powers of ten.
    let y0 = 10f64.powf(lo.log10().floor());
    let y1 = 10f64.powf((hi * 1.5).log10().ceil());
    let title = format!(
        "layerctl bench: wall time per step (median of {} run{}; lower is better)",
        r.runs,
        if r.runs == 1 { "" } else { "s" }
    );
    let mut chart = ChartBuilder::on(&main)
        .caption(title, ("sans-serif", 30))
        .margin(20)
        .x_label_area_size(80)
        .y_label_area_size(100)
        .build_cartesian_2d(0f64..steps.len() as f64, (y0..y1).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("time per step, milliseconds (log scale)")
        .x_desc("step of the scenario (bar: median; black whisker: min to max)")
        .y_label_formatter(&|v| axis_ms(*v))
        .axis_desc_style(("sans-serif", 20))
        .label_style(("sans-serif", 18))
        .draw()
        .map_err(err)?;
    // Bars, one series per target (its legend entry).
    for t in &r.targets {
        let color = color_of(r, &t.name);
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            let here: Vec<&str> = r
                .results
                .iter()
                .filter(|x| x.step == *s)
                .map(|x| x.target.as_str())
                .collect();
            let Some(j) = here.iter().position(|n| *n == t.name) else {
                continue;
            };
            let Some(x) = r
                .results
                .iter()
                .find(|x| x.step == *s && x.target == t.name)
            else {
                continue;
            };
            let w = 0.84 / here.len() as f64;
            let x0 = i as f64 + 0.08 + j as f64 * w;
            let x1 = x0 + w * 0.92;
            let xc = (x0 + x1) / 2.0;
            bars.push(Rectangle::new(
                [(x0, y0), (x1, x.median_ms.max(y0))],
                color.filled(),
            ));
            if x.max_ms > x.min_ms {
                whiskers.push(PathElement::new(
                    vec![(xc, x.min_ms.max(y0)), (xc, x.max_ms)],
                    BLACK.stroke_width(2),
                ));
            }
        }
        chart.draw_series(bars).map_err(err)?;
        chart.draw_series(whiskers).map_err(err)?;
    }
    // Step names under each group, and faint separators between groups.
    let label = TextStyle::from(("sans-serif", 20).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (i, s) in steps.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, y0));
        main.draw(&Text::new(s.to_string(), (px, py + 10), label.clone()))
            .map_err(err)?;
        if i > 0 {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(i as f64, y0), (i as f64, y1)],
                    BLACK.mix(0.15).stroke_width(1),
                )))
                .map_err(err)?;
        }
    }
    // Legend column: colours, then the context a reader needs.
    let mut y = 70;
    let head = TextStyle::from(("sans-serif", 22).into_font()).color(&BLACK);
    let small = TextStyle::from(("sans-serif", 16).into_font()).color(&BLACK);
    legend
        .draw(&Text::new("bars", (10, y), head.clone()))
        .map_err(err)?;
    y += 34;
    for t in &r.targets {
        let c = color_of(r, &t.name);
        legend
            .draw(&Rectangle::new([(10, y), (34, y + 20)], c.filled()))
            .map_err(err)?;
        let what = if t.kind == "driver" {
            "layerctl driver"
        } else {
            "peer"
        };
        legend
            .draw(&Text::new(
                format!("{} ({what})", t.name),
                (44, y + 1),
                ("sans-serif", 19).into_font(),
            ))
            .map_err(err)?;
        y += 32;
    }
    y += 16;
    let mib = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
    let name = r
        .input
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cpu: String = r.machine.cpu.chars().take(36).collect();
    let lines = [
        format!("input: {name} ({})", r.input.origin),
        format!(
            "{} files, {} content",
            r.input.files,
            mib(r.input.content_bytes)
        ),
        format!(
            "{} dirs, {} symlinks, {} hard links",
            r.input.dirs, r.input.symlinks, r.input.hard_links
        ),
        format!("stores on {}", r.filesystem.fstype),
        format!("kernel {}", r.machine.kernel),
        format!(
            "{} CPUs, {:.1} GB RAM",
            r.machine.cpus,
            r.machine.memory_bytes as f64 / 1e9
        ),
        cpu,
        format!("load average {} at start", r.machine.load_start),
        "no bar: the target has no such step".to_owned(),
        "(peers run only the steps they have)".to_owned(),
    ];
    legend
        .draw(&Text::new("context", (10, y), head.clone()))
        .map_err(err)?;
    y += 30;
    for l in lines {
        legend
            .draw(&Text::new(l, (10, y), small.clone()))
            .map_err(err)?;
        y += 22;
    }
    if !r.skipped.is_empty() {
        y += 16;
        legend
            .draw(&Text::new("not measured", (10, y), head))
            .map_err(err)?;
        y += 30;
        for s in &r.skipped {
            let mut lines = wrap(&format!("{} {}: {}", s.kind, s.name, s.reason), 36);
            if lines.len() > 3 {
                lines.truncate(3);
                lines[2].push('…');
            }
            for l in lines {
                legend
                    .draw(&Text::new(l, (10, y), small.clone()))
                    .map_err(err)?;
                y += 20;
            }
            y += 6;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_and_width() {
        let w = wrap(
            "`containers-storage` not found in PATH (apt-get install containers-storage)",
            20,
        );
        assert!(w.iter().all(|l| l.chars().count() <= 20), "{w:?}");
        assert_eq!(
            w.join(" ").replace(' ', ""),
            "`containers-storage`notfoundinPATH(apt-getinstallcontainers-storage)"
        );
    }

    #[test]
    fn axis_labels_have_no_trailing_zeros() {
        assert_eq!(axis_ms(0.01), "0.01");
        assert_eq!(axis_ms(0.1), "0.1");
        assert_eq!(axis_ms(1.0), "1");
        assert_eq!(axis_ms(1000.0), "1000");
    }
}
