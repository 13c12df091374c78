//! Minimal hand-written SVG figures for the paper examples (no plotting dependency).

use std::fmt::Write as _;

/// Viridis-like colour for t ∈ [0, 1] (linear between five stops of the viridis map).
fn colour(t: f64) -> String {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + f * (q - p)).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

/// Quantile ranks in [0, 1] (ties share their mean rank): the colour scale of a spatial panel,
/// so that a measured count and an imputed mean on different scales are comparable.
fn ranks01(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0;
        for &k in &idx[i..=j] {
            r[k] = mean / (v.len().max(2) - 1) as f64;
        }
        i = j + 1;
    }
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Side-by-side panels of cells at their (x, y) coordinates, each coloured by the quantile
/// rank of its values (Fig. 4: measured vs imputed expression of one gene).
pub fn spatial_panels(title: &str, xy: &[Vec<f64>], panels: &[(String, Vec<f64>)]) -> String {
    let (w, h, pad, top) = (420.0, 420.0, 20.0, 50.0);
    let xs: Vec<f64> = xy.iter().map(|p| p[0]).collect();
    let ys: Vec<f64> = xy.iter().map(|p| p[1]).collect();
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::INFINITY, f64::min),
        xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = (
        ys.iter().cloned().fold(f64::INFINITY, f64::min),
        ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    );
    let scale = ((w - 2.0 * pad) / (x1 - x0).max(1e-9)).min((h - 2.0 * pad) / (y1 - y0).max(1e-9));
    let total_w = w * panels.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{}" font-family="sans-serif">"#,
        h + top
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    for (p, (name, values)) in panels.iter().enumerate() {
        let ox = p as f64 * w;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="42" font-size="13">{}</text>"#,
            ox + pad,
            escape(name)
        );
        let r = ranks01(values);
        // Draw low values first so that high-expression cells stay visible.
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| r[a].total_cmp(&r[b]));
        for i in order {
            let cx = ox + pad + (xs[i] - x0) * scale;
            // y grows downwards in SVG; flip so that the tissue is not mirrored.
            let cy = top + pad + (y1 - ys[i]) * scale;
            let _ = writeln!(
                out,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="2.2" fill="{}"/>"#,
                colour(r[i])
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A labelled scatter plot (Fig. 3: per-gene uncertainty against predictability).
pub fn scatter(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64, String)]) -> String {
    let (w, h, left, bottom, top, right) = (620.0, 460.0, 70.0, 50.0, 40.0, 20.0);
    let finite: Vec<&(f64, f64, String)> = points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let range = |v: Vec<f64>| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi > lo {
            let m = 0.05 * (hi - lo);
            (lo - m, hi + m)
        } else {
            (lo - 1.0, lo + 1.0)
        }
    };
    let (x0, x1) = range(finite.iter().map(|p| p.0).collect());
    let (y0, y1) = range(finite.iter().map(|p| p.1).collect());
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - bottom - top);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="14">{}</text>"#,
        escape(title)
    );
    // Axes with ticks at the range ends and the middle.
    let _ = writeln!(
        out,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for k in 0..3 {
        let f = k as f64 / 2.0;
        let (xv, yv) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{xv:.3}</text><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{yv:.3}</text>"#,
            px(xv),
            h - bottom + 16.0,
            left - 4.0,
            py(yv) + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
        (left + w - right) / 2.0,
        h - 10.0,
        escape(x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0,
        escape(y_label)
    );
    for (x, y, label) in finite {
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#21918c"/><text x="{:.1}" y="{:.1}" font-size="9">{}</text>"##,
            px(*x),
            py(*y),
            px(*x) + 5.0,
            py(*y) - 3.0,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One line of a line plot: its legend name and its y value at every x.
pub type Series = (String, Vec<f64>);

/// Panels of line plots sharing the x axis, one line per series, with a legend (Fig. 2:
/// integration metrics over k). `panels`: (title, series of (name, y per x)).
pub fn line_panels(
    title: &str,
    x: &[f64],
    x_label: &str,
    panels: &[(String, Vec<Series>)],
) -> String {
    const COLOURS: [&str; 6] = [
        "#440154", "#3b528b", "#21918c", "#5ec962", "#e08214", "#b2182b",
    ];
    let (w, h, left, bottom, top, right) = (380.0, 330.0, 60.0, 45.0, 60.0, 15.0);
    let total_w = w * panels.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{}" font-family="sans-serif">"#,
        h + 20.0 * (panels.first().map_or(0, |p| p.1.len()) as f64)
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    let (x0, x1) = (
        x.iter().cloned().fold(f64::INFINITY, f64::min),
        x.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    );
    for (p, (panel_title, series)) in panels.iter().enumerate() {
        let ox = p as f64 * w;
        let ys: Vec<f64> = series
            .iter()
            .flat_map(|s| s.1.iter().cloned())
            .filter(|v| v.is_finite())
            .collect();
        let lo = ys.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let (y0, y1) = if lo.is_finite() && hi > lo {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        } else {
            (lo - 1.0, lo + 1.0)
        };
        let px = |v: f64| ox + left + (v - x0) / (x1 - x0).max(1e-12) * (w - left - right);
        let py = |v: f64| h - bottom - (v - y0) / (y1 - y0) * (h - bottom - top);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="45" font-size="13">{}</text><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{}" y1="{top}" x2="{}" y2="{}" stroke="black"/>"#,
            ox + left,
            escape(panel_title),
            ox + left,
            h - bottom,
            ox + w - right,
            h - bottom,
            ox + left,
            ox + left,
            h - bottom
        );
        for k in 0..3 {
            let f = k as f64 / 2.0;
            let (xv, yv) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{xv:.0}</text><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{yv:.3}</text>"#,
                px(xv),
                h - bottom + 15.0,
                ox + left - 4.0,
                py(yv) + 4.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
            ox + (left + w - right) / 2.0,
            h - 12.0,
            escape(x_label)
        );
        for (i, (_, v)) in series.iter().enumerate() {
            let pts: Vec<String> = x
                .iter()
                .zip(v)
                .filter(|(_, y)| y.is_finite())
                .map(|(&a, &b)| format!("{:.1},{:.1}", px(a), py(b)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                COLOURS[i % COLOURS.len()],
                pts.join(" ")
            );
        }
    }
    // Legend under the panels.
    if let Some((_, series)) = panels.first() {
        for (i, (name, _)) in series.iter().enumerate() {
            let y = h + 5.0 + 20.0 * i as f64;
            let _ = writeln!(
                out,
                r#"<line x1="20" y1="{y}" x2="45" y2="{y}" stroke="{}" stroke-width="3"/><text x="52" y="{}" font-size="12">{}</text>"#,
                COLOURS[i % COLOURS.len()],
                y + 4.0,
                escape(name)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}
