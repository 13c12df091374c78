//! Figures of the evaluation, drawn with [plotters](https://docs.rs/plotters) and written as
//! SVG and PNG side by side (`STEM.svg`, `STEM.png`): the paper's Fig. 2 (integration curves),
//! Fig. 3 (uncertainty against error or predictability), Fig. 4 (a held-out gene on the tissue)
//! and the calibration curve of prediction intervals. Text is rendered with DejaVu Sans,
//! embedded in the binary (pure Rust, no system font library).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use crate::error::{Error, Result};

/// DejaVu Sans (Bitstream Vera derivative; its licence is in `assets/DejaVuSans-LICENSE`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Series colours (colour-blind-safe, Okabe–Ito).
const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// A named series of (x, y) points: a line of [`line_panels`].
type Series = (String, Vec<(f64, f64)>);

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Input(
            "the embedded figure font could not be read".into(),
        ))
    }
}

fn figure_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Input(format!("cannot draw figure {}: {e}", path.display()))
}

/// Writes `STEM.svg` and `STEM.png` of `size` pixels, each drawn by `draw`; returns both paths.
fn both(
    stem: &Path,
    size: (u32, u32),
    svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> std::result::Result<(), String>,
    png: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<Vec<PathBuf>> {
    register_font()?;
    let svg_path = stem.with_extension("svg");
    let png_path = stem.with_extension("png");
    {
        let root = SVGBackend::new(&svg_path, size).into_drawing_area();
        svg(&root).map_err(|e| figure_error(&svg_path, e))?;
        root.present().map_err(|e| figure_error(&svg_path, e))?;
    }
    {
        let root = BitMapBackend::new(&png_path, size).into_drawing_area();
        png(&root).map_err(|e| figure_error(&png_path, e))?;
        root.present().map_err(|e| figure_error(&png_path, e))?;
    }
    Ok(vec![svg_path, png_path])
}

/// `?` for plotters' errors inside the drawing functions.
macro_rules! t {
    ($e:expr) => {
        $e.map_err(|e| e.to_string())?
    };
}

/// A tick label with as few digits as the value needs (no "50000.0").
fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The bounds of `values` (finite ones) with a 5 % margin; a unit interval around a constant.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi > lo {
        let m = 0.05 * (hi - lo);
        (lo - m, hi + m)
    } else {
        (lo - 0.5, lo + 0.5)
    }
}

/// Line panels sharing the x axis, one line per named series of (x, y) points, a legend in
/// each: the paper's Fig. 2 (integration metrics over k), or with `calibration` set the
/// calibration curve of prediction intervals (x = nominal, y = empirical coverage, both on
/// [0, 1], the diagonal dashed). `panels`: (panel title, series).
#[allow(clippy::type_complexity)] // spelled out so that callers need no type of this module
pub fn line_panels(
    stem: &Path,
    title: &str,
    x_label: &str,
    panels: &[(String, Vec<(String, Vec<(f64, f64)>)>)],
    calibration: bool,
) -> Result<Vec<PathBuf>> {
    let width = if calibration { 560 } else { 440 };
    let size = (
        width * panels.len().max(1) as u32,
        if calibration { 520 } else { 440 },
    );
    both(
        stem,
        size,
        |root| draw_line_panels(root, title, x_label, panels, calibration),
        |root| draw_line_panels(root, title, x_label, panels, calibration),
    )
}

fn draw_line_panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    panels: &[(String, Vec<Series>)],
    diagonal: bool,
) -> std::result::Result<(), String> {
    t!(root.fill(&WHITE));
    let area = t!(root.titled(title, (FAMILY, 17)));
    let cells = area.split_evenly((1, panels.len().max(1)));
    for (cell, (panel_title, series)) in cells.iter().zip(panels) {
        let points = || series.iter().flat_map(|s| s.1.iter().copied());
        let (x0, x1, y0, y1) = if diagonal {
            (0.0, 1.0, 0.0, 1.0)
        } else {
            let (x0, x1) = range(points().map(|p| p.0));
            let (y0, y1) = range(points().map(|p| p.1));
            (x0, x1, y0, y1)
        };
        let mut chart = t!(ChartBuilder::on(cell)
            .caption(panel_title, (FAMILY, 14))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1));
        t!(chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(if diagonal { "empirical coverage" } else { "" })
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .light_line_style(WHITE.mix(0.0))
            .draw());
        if diagonal {
            t!(chart.draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                BLACK.mix(0.6).stroke_width(1),
            )));
        }
        for (i, (name, pts)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let finite: Vec<(f64, f64)> = pts
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            t!(chart.draw_series(LineSeries::new(finite, colour.stroke_width(2))))
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        t!(chart
            .configure_series_labels()
            .position(if diagonal {
                SeriesLabelPosition::UpperLeft
            } else {
                SeriesLabelPosition::LowerRight
            })
            .label_font((FAMILY, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw());
    }
    Ok(())
}

/// A scatter plot of labelled points (the paper's Fig. 3: per-gene uncertainty against
/// predictability or error); labels are drawn beside the points when there are at most 60.
pub fn scatter(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64, String)],
) -> Result<Vec<PathBuf>> {
    both(
        stem,
        (720, 560),
        |root| draw_scatter(root, title, x_label, y_label, points),
        |root| draw_scatter(root, title, x_label, y_label, points),
    )
}

fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64, String)],
) -> std::result::Result<(), String> {
    t!(root.fill(&WHITE));
    let finite: Vec<&(f64, f64, String)> = points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let (x0, x1) = range(finite.iter().map(|p| p.0));
    let (y0, y1) = range(finite.iter().map(|p| p.1));
    let mut chart = t!(ChartBuilder::on(root)
        .caption(title, (FAMILY, 15))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1));
    t!(chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(WHITE.mix(0.0))
        .draw());
    let dot = COLOURS[0];
    t!(chart.draw_series(
        finite
            .iter()
            .map(|p| Circle::new((p.0, p.1), 3, dot.mix(0.7).filled())),
    ));
    if finite.len() <= 60 {
        // Each label starts 5 pixels right of its point, so the marker hides none of it.
        t!(chart.draw_series(finite.iter().map(|p| {
            EmptyElement::at((p.0, p.1))
                + Text::new(
                    p.2.clone(),
                    (5, -5),
                    (FAMILY, 10).into_font().color(&BLACK.mix(0.75)),
                )
        })));
    }
    Ok(())
}

/// Side-by-side panels of cells at their (x, y) coordinates, each coloured by its own values
/// on the viridis scale with a colour bar (the paper's Fig. 4: a held-out gene measured,
/// imputed, and the width of its prediction interval). `panels`: (title, value per cell).
pub fn spatial_panels(
    stem: &Path,
    title: &str,
    xy: &[(f64, f64)],
    panels: &[(String, Vec<f64>)],
) -> Result<Vec<PathBuf>> {
    let size = (430 * panels.len().max(1) as u32, 470);
    both(
        stem,
        size,
        |root| draw_spatial(root, title, xy, panels),
        |root| draw_spatial(root, title, xy, panels),
    )
}

fn draw_spatial<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    xy: &[(f64, f64)],
    panels: &[(String, Vec<f64>)],
) -> std::result::Result<(), String> {
    t!(root.fill(&WHITE));
    let area = t!(root.titled(title, (FAMILY, 16)));
    let (x0, x1) = range(xy.iter().map(|p| p.0));
    let (y0, y1) = range(xy.iter().map(|p| p.1));
    for (cell, (panel_title, values)) in area
        .split_evenly((1, panels.len().max(1)))
        .iter()
        .zip(panels)
    {
        let (map, bar) = cell.split_horizontally(cell.dim_in_pixel().0.saturating_sub(90));
        // Colour scale: the 1st–99th percentile of the panel's values (a few extreme cells
        // would otherwise flatten the rest).
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            sorted
                .get(((sorted.len().max(1) - 1) as f64 * q) as usize)
                .copied()
        };
        let (lo, hi) = match (pick(0.01), pick(0.99)) {
            (Some(lo), Some(hi)) if hi > lo => (lo, hi),
            (Some(lo), _) => (lo, lo + 1.0),
            _ => (0.0, 1.0),
        };
        let colour = |v: f64| ViridisRGB.get_color(((v - lo) / (hi - lo)).clamp(0.0, 1.0) as f32);
        let mut chart = t!(ChartBuilder::on(&map)
            .caption(panel_title, (FAMILY, 13))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(x0..x1, y0..y1));
        t!(chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("x")
            .y_desc("y")
            .x_labels(5)
            .y_labels(6)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style((FAMILY, 10))
            .axis_desc_style((FAMILY, 11))
            .draw());
        let mut order: Vec<usize> = (0..xy.len().min(values.len())).collect();
        // Low values first, so that the high ones stay visible.
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        t!(chart.draw_series(
            order
                .iter()
                .filter(|&&i| values[i].is_finite())
                .map(|&i| { Circle::new(xy[i], 2, colour(values[i]).filled()) })
        ));
        // The colour bar with its own axis.
        let mut scale = t!(ChartBuilder::on(&bar)
            .margin_top(34)
            .margin_bottom(38)
            .margin_left(6)
            .margin_right(2)
            .set_label_area_size(LabelAreaPosition::Right, 58)
            .build_cartesian_2d(0.0..1.0, lo..hi));
        t!(scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            // A tick long enough to read as a dash, and a space between it and its number
            // (a 2-pixel tick touching "30" read as ".30").
            .set_tick_mark_size(LabelAreaPosition::Right, 6)
            .y_label_formatter(&|v| format!(" {}", tick(*v)))
            .label_style((FAMILY, 10))
            .draw());
        let steps = 64;
        t!(scale.draw_series((0..steps).map(|k| {
            let a = lo + (hi - lo) * k as f64 / steps as f64;
            let b = lo + (hi - lo) * (k + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, a), (1.0, b)], colour(0.5 * (a + b)).filled())
        })));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gimvi-figures-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn scatter_labels_every_point_and_writes_both_formats() {
        let dir = out_dir("scatter");
        let points: Vec<(f64, f64, String)> = (0..12)
            .map(|i| {
                (
                    f64::from(i) * 0.1,
                    1.0 - f64::from(i) * 0.05,
                    format!("Gene{i}"),
                )
            })
            .collect();
        let written = scatter(&dir.join("fig3"), "title", "x", "y", &points).unwrap();
        assert_eq!(written.len(), 2);
        let svg = std::fs::read_to_string(&written[0]).unwrap();
        for (_, _, name) in &points {
            assert!(svg.contains(name.as_str()), "label {name} missing");
        }
        let png = std::fs::read(&written[1]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        if std::env::var_os("GIMVI_KEEP_FIGURES").is_none() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn spatial_panels_have_colour_bar_numbers_apart_from_their_tick_marks() {
        let dir = out_dir("spatial");
        let xy: Vec<(f64, f64)> = (0..400)
            .map(|i| (f64::from(i % 20) * 100.0, f64::from(i / 20) * 100.0))
            .collect();
        let values: Vec<f64> = (0..400).map(|i| f64::from(i % 37)).collect();
        let written = spatial_panels(
            &dir.join("fig4"),
            "title",
            &xy,
            &[
                ("measured".into(), values.clone()),
                ("imputed".into(), values),
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&written[0]).unwrap();
        // The colour bar's numbers are written with a leading space (0 to 36 here).
        // plotters writes a text element as `<text …>\nVALUE\n</text>`.
        assert!(svg.contains("\n 30\n</text>"), "no colour bar tick \" 30\"");
        assert!(
            !svg.contains("\n30\n</text>"),
            "a tick number without its space"
        );
        let png = std::fs::read(&written[1]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        if std::env::var_os("GIMVI_KEEP_FIGURES").is_none() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
