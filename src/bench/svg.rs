//! A line chart as SVG text: hit ratio against L1 size (log scale), one line per series.

use std::fmt::Write;

pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub dashed: bool,
    /// (x, y) with x > 0 and y in [0, 1].
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

pub fn chart(title: &str, x_label: &str, series: &[Series]) -> String {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let (lo, hi) = (lo.log10(), hi.log10().max(lo.log10() + 1e-9));
    let px = |x: f64| LEFT + (x.log10() - lo) / (hi - lo) * (W - LEFT - RIGHT);
    let py = |y: f64| TOP + (1.0 - y) * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="28" font-size="16" text-anchor="middle">{title}</text>
"#,
        (W - RIGHT + LEFT) / 2.0
    );
    for i in 0..=10 {
        let y = f64::from(i) / 10.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#e5e5e5"/><text x="{2}" y="{3:.1}" text-anchor="end">{y:.1}</text>"##,
            py(y),
            W - RIGHT,
            LEFT - 8.0,
            py(y) + 4.0
        );
    }
    let mut ticks: Vec<f64> = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for x in ticks {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#f0f0f0"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{3}</text>"##,
            px(x),
            H - BOTTOM,
            H - BOTTOM + 18.0,
            trim(x)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{0:.1}" y="{1:.1}" text-anchor="middle">{x_label}</text>
<text transform="translate(18 {2:.1}) rotate(-90)" text-anchor="middle">hit ratio</text>
<rect x="{LEFT}" y="{TOP}" width="{3:.1}" height="{4:.1}" fill="none" stroke="black"/>
"#,
        (W - RIGHT + LEFT) / 2.0,
        H - 16.0,
        (H - BOTTOM + TOP) / 2.0,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"{dash}/>"#,
            points.join(" "),
            c = s.colour
        );
        for &(x, y) in &s.points {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                px(x),
                py(y),
                s.colour
            );
        }
        let ly = TOP + 20.0 + i as f64 * 20.0;
        let _ = write!(
            svg,
            r#"
<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/><text x="{2}" y="{3}">{name}</text>
"#,
            W - RIGHT + 15.0,
            W - RIGHT + 45.0,
            W - RIGHT + 52.0,
            ly + 4.0,
            c = s.colour,
            name = s.name
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}
