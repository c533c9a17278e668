//! A small hand-written SVG line chart: axes with round ticks, one polyline
//! with markers per series, an optional dashed reference line, a legend.
use std::fmt::Write as _;

/// One line of the chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points; drawn in x order.
    pub points: Vec<(f64, f64)>,
    /// Index into the palette, so a variant keeps its colour across charts.
    pub color: usize,
}

/// What to draw.
pub struct Chart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label under the x axis.
    pub x_label: &'a str,
    /// Label beside the y axis.
    pub y_label: &'a str,
    /// The lines.
    pub series: Vec<Series>,
    /// A dashed horizontal line (y, label), e.g. a target.
    pub reference: Option<(f64, &'a str)>,
    /// Force the y range to include these values.
    pub y_include: &'a [f64],
    /// Categorical x axis: the tick at x = i is labelled `x_categories[i]`
    /// (points use the index as x). Empty: a numeric axis.
    pub x_categories: Vec<String>,
}

const COLORS: [&str; 6] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
];
const W: f64 = 720.0;
const H: f64 = 420.0;
const L: f64 = 70.0;
const R: f64 = 210.0;
const T: f64 = 40.0;
const B: f64 = 55.0;

/// Round tick positions covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 7.0)
        .unwrap_or(10.0 * mag);
    let (first, last) = ((lo / step).floor() as i64, (hi / step - 1e-9).ceil() as i64);
    (first..=last.max(first + 1))
        .map(|i| i as f64 * step)
        .collect()
}

fn label(v: f64) -> String {
    if v.abs() >= 1000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Render the chart as a standalone SVG document.
pub fn render(c: &Chart) -> String {
    let pts = c.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    for &y in c.y_include.iter().chain(c.reference.iter().map(|(y, _)| y)) {
        (y0, y1) = (y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let cats = &c.x_categories;
    let xt = match cats.is_empty() {
        true => ticks(0f64.min(x0), x1),
        false => (0..cats.len()).map(|i| i as f64).collect(),
    };
    let yt = ticks(y0, y1);
    let (xa, xb) = match cats.is_empty() {
        true => (xt[0], xt[xt.len() - 1]),
        false => (-0.5, cats.len() as f64 - 0.5),
    };
    let x_label = |x: f64| cats.get(x as usize).cloned().unwrap_or_else(|| label(x));
    let (ya, yb) = (yt[0], yt[yt.len() - 1]);
    let px = |x: f64| L + (x - xa) / (xb - xa).max(1e-12) * (W - L - R);
    let py = |y: f64| H - B - (y - ya) / (yb - ya).max(1e-12) * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        esc(c.title)
    );
    for &x in &xt {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(x),
            T,
            H - B,
            H - B + 16.0,
            esc(&x_label(x))
        );
    }
    for &y in &yt {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(y),
            W - R,
            L - 6.0,
            py(y) + 4.0,
            label(y)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        W - L - R,
        H - T - B
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        H - 12.0,
        esc(c.x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {0}) rotate(-90)" text-anchor="middle">{1}</text>"#,
        (T + H - B) / 2.0,
        esc(c.y_label)
    );
    if let Some((y, name)) = c.reference {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#c00" stroke-dasharray="6 4"/><text x="{1}" y="{2:.1}" fill="#c00" text-anchor="end">{3}</text>"##,
            py(y),
            W - R,
            py(y) - 4.0,
            esc(name)
        );
    }
    for (i, ser) in c.series.iter().enumerate() {
        let color = COLORS[ser.color % COLORS.len()];
        let mut p = ser.points.clone();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            line.join(" ")
        );
        for &(x, y) in &p {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#,
                px(x),
                py(y)
            );
        }
        let ly = T + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{color}" stroke-width="2"/><text x="{3}" y="{4}">{5}</text>"#,
            W - R + 12.0,
            ly,
            W - R + 32.0,
            W - R + 38.0,
            ly + 4.0,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 23_000.0);
        assert!(t[0] <= 0.0 && *t.last().expect("ticks") >= 23_000.0);
        assert!(t.len() <= 9);
        assert_eq!(label(5000.0), "5k");
        assert_eq!(label(0.95), "0.95");
    }

    #[test]
    fn renders_every_series() {
        let svg = render(&Chart {
            title: "t",
            x_label: "x",
            y_label: "y",
            series: vec![
                Series {
                    name: "a<b".into(),
                    points: vec![(1.0, 1.0), (2.0, 0.9)],
                    color: 0,
                },
                Series {
                    name: "c".into(),
                    points: vec![(1.0, 0.8)],
                    color: 1,
                },
            ],
            reference: Some((0.97, "target")),
            y_include: &[1.0],
            x_categories: Vec::new(),
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a&lt;b"));
    }
}
