//! `compare.svg`: the comparison as a picture, so a user can look rather than
//! read. Hand-written SVG text (a few rectangles, lines and labels need no
//! crate), self-contained, readable in any browser. Three panels: throughput
//! per cell normalized to the cell's peer (Redis, or nginx for the file cells)
//! with absolute ops/s as labels and the cell's target and verdict, p50/p99
//! latency per cell on a log scale, and RSS bytes per key.

use std::fmt::Write;

/// Series colours, in series order: bankcache, redis, memcached, nginx.
const PALETTE: [&str; 6] = ["#2b6cb0", "#c53030", "#2f855a", "#b7791f", "#6b46c1", "#4a5568"];
/// The chart's least width; more cells widen it, so that their labels do not overlap.
const MIN_WIDTH: f64 = 1000.0;
/// Width per group of bars beyond `MIN_WIDTH`.
const GROUP_WIDTH: f64 = 112.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const PANEL_HEIGHT: f64 = 230.0;

/// One server's figures in one throughput cell.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One throughput cell: its id ("a"), a short label, and a point per series
/// (`None` where that server has no figure).
#[derive(Clone, Debug)]
pub struct Cell {
    pub id: String,
    pub label: String,
    pub points: Vec<Option<Point>>,
    /// Index in the series of the server this cell is normalized to (its peer).
    pub baseline: Option<usize>,
    /// The ratio to the baseline the target asks for, drawn as a mark.
    pub target: Option<f64>,
    /// The target's verdict in a few words, under the cell's label.
    pub verdict: String,
}

/// What the chart shows; built by `compare` from its medians.
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub subtitle: String,
    /// Server names, in legend and bar order.
    pub series: Vec<String>,
    pub cells: Vec<Cell>,
    /// The RSS cell: its label and bytes per key per series, if it was run.
    pub rss: Option<(String, Vec<Option<f64>>)>,
}

/// Escapes text for an SVG text node or attribute.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// 152301 -> "152k", 1520000 -> "1.52M": short labels above bars.
pub fn short_number(value: f64) -> String {
    let (scaled, unit) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    if scaled >= 100.0 || unit.is_empty() && scaled >= 10.0 {
        format!("{scaled:.0}{unit}")
    } else if scaled >= 10.0 {
        format!("{scaled:.1}{unit}")
    } else {
        format!("{scaled:.2}{unit}")
    }
}

/// A latency in microseconds, with a unit that keeps it short.
fn short_latency(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", short_number(us / 1000.0))
    } else {
        format!("{} us", short_number(us))
    }
}

/// The label of the gridline at 10^`exp` microseconds: "100 us", "1 ms".
fn decade_label(exp: f64) -> String {
    if exp >= 3.0 {
        format!("{} ms", 10f64.powf(exp - 3.0))
    } else {
        format!("{} us", 10f64.powf(exp))
    }
}

/// A step for about five gridlines up to `max`: 1, 2 or 5 times a power of ten.
fn nice_step(max: f64) -> f64 {
    let rough = (max / 5.0).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|&step| step >= rough).unwrap_or(10.0 * power)
}

/// The x of bar `s` of group `g`, and the bar width.
fn bar_x(width: f64, g: usize, groups: usize, s: usize, series: usize) -> (f64, f64) {
    let plot = width - LEFT - RIGHT;
    let group_w = plot / groups.max(1) as f64;
    let bar_w = group_w * 0.75 / series.max(1) as f64;
    let x = LEFT + g as f64 * group_w + group_w * 0.125 + s as f64 * bar_w;
    (x, bar_w)
}

fn text(svg: &mut String, x: f64, y: f64, anchor: &str, size: u32, extra: &str, content: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}"{extra}>{}</text>"#,
        esc(content)
    );
}

fn line(svg: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, style: &str) {
    let _ = writeln!(svg, r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#);
}

fn rect(svg: &mut String, x: f64, y: f64, w: f64, h: f64, fill: &str, extra: &str) {
    let _ = writeln!(
        svg,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{fill}"{extra}/>"#,
        h.max(0.0)
    );
}

/// The y axis of a linear panel: gridlines and labels from 0 to `max`.
fn linear_axis(svg: &mut String, width: f64, top: f64, max: f64, label: impl Fn(f64) -> String) {
    let step = nice_step(max);
    let mut value = 0.0;
    while value <= max + step * 1e-9 {
        let y = top + PANEL_HEIGHT - value / max * PANEL_HEIGHT;
        line(svg, LEFT, y, width - RIGHT, y, r##"stroke="#e2e8f0""##);
        text(svg, LEFT - 6.0, y + 4.0, "end", 11, "", &label(value));
        value += step;
    }
}

/// Group labels under a panel: the id, a label, and a third line (the
/// target's verdict) if not empty.
fn group_labels(svg: &mut String, width: f64, top: f64, labels: &[(String, String, String)]) {
    for (g, (id, label, verdict)) in labels.iter().enumerate() {
        let (x, w) = bar_x(width, g, labels.len(), 0, 1);
        let cx = x + w / 2.0;
        let y = top + PANEL_HEIGHT;
        text(svg, cx, y + 16.0, "middle", 13, r#" font-weight="bold""#, id);
        text(svg, cx, y + 30.0, "middle", 10, r##" fill="#4a5568""##, label);
        if !verdict.is_empty() {
            let color = if verdict.starts_with("MISSED") { "#c53030" } else { "#2f855a" };
            text(svg, cx, y + 44.0, "middle", 10, &format!(r#" fill="{color}""#), verdict);
        }
    }
}

fn panel_title(svg: &mut String, top: f64, title: &str) {
    text(svg, LEFT, top - 12.0, "start", 14, r#" font-weight="bold""#, title);
}

/// Throughput per cell, each normalized to its baseline server's (or, where
/// that is missing, to the cell's best), with absolute ops/s above the bars,
/// the target ratio as a mark across the group, and the verdict below.
fn throughput_panel(svg: &mut String, width: f64, chart: &Chart, top: f64) {
    let mut bases: Vec<&str> = Vec::new();
    for name in chart.cells.iter().filter_map(|c| c.baseline.and_then(|b| chart.series.get(b))) {
        if !bases.contains(&name.as_str()) {
            bases.push(name);
        }
    }
    let base_name = if bases.is_empty() { "the best server".to_string() } else { bases.join(" or ") };
    panel_title(
        svg,
        top,
        &format!(
            "Throughput, normalized to the cell's peer ({base_name}) = 1.0 (labels: ops/s; orange line: target)"
        ),
    );
    let mut norms = Vec::with_capacity(chart.cells.len());
    let mut max: f64 = 1.0;
    for cell in &chart.cells {
        let ops = |s: usize| cell.points.get(s).copied().flatten().map(|p| p.ops_per_sec);
        max = max.max(cell.target.unwrap_or(0.0));
        let base = cell
            .baseline
            .and_then(ops)
            .filter(|&b| b > 0.0)
            .or_else(|| cell.points.iter().flatten().map(|p| p.ops_per_sec).reduce(f64::max))
            .filter(|&b| b > 0.0);
        let normed: Vec<Option<f64>> =
            (0..chart.series.len()).map(|s| ops(s).zip(base).map(|(v, b)| v / b)).collect();
        max = normed.iter().flatten().copied().fold(max, f64::max);
        norms.push(normed);
    }
    let max = max * 1.15;
    linear_axis(svg, width, top, max, |v| format!("{v:.2}"));
    let one = top + PANEL_HEIGHT - PANEL_HEIGHT / max;
    line(svg, LEFT, one, width - RIGHT, one, r##"stroke="#1a202c" stroke-dasharray="5,4""##);
    for (g, (cell, normed)) in chart.cells.iter().zip(&norms).enumerate() {
        for (s, value) in normed.iter().enumerate() {
            let (x, w) = bar_x(width, g, chart.cells.len(), s, chart.series.len());
            let Some(value) = value else {
                text(svg, x + w / 2.0, top + PANEL_HEIGHT - 4.0, "middle", 9, "", "n/a");
                continue;
            };
            let h = value / max * PANEL_HEIGHT;
            let y = top + PANEL_HEIGHT - h;
            let title = format!(
                "<title>{} {}: {:.0} ops/s ({value:.2})</title>",
                esc(&cell.id),
                esc(&chart.series[s]),
                cell.points[s].map_or(0.0, |p| p.ops_per_sec)
            );
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{}">{title}</rect>"#,
                PALETTE[s % PALETTE.len()]
            );
            let label = cell.points[s].map_or(String::new(), |p| short_number(p.ops_per_sec));
            text(svg, x + w / 2.0, y - 4.0, "middle", 10, "", &label);
        }
        if let Some(target) = cell.target.filter(|_| cell.baseline.is_some()) {
            let (x0, _) = bar_x(width, g, chart.cells.len(), 0, chart.series.len());
            let (x1, w) = bar_x(width, g, chart.cells.len(), chart.series.len() - 1, chart.series.len());
            let y = top + PANEL_HEIGHT - target / max * PANEL_HEIGHT;
            let _ = writeln!(
                svg,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d69e2e" stroke-width="3"><title>{} target: {target:.2}x</title></line>"##,
                x0 - 3.0,
                x1 + w + 3.0,
                esc(&cell.id)
            );
        }
    }
    let labels: Vec<(String, String, String)> =
        chart.cells.iter().map(|c| (c.id.clone(), c.label.clone(), c.verdict.clone())).collect();
    group_labels(svg, width, top, &labels);
}

/// p50 (solid) and p99 (pale) latency per cell and server, on a log scale so
/// that microseconds and milliseconds fit one panel.
fn latency_panel(svg: &mut String, width: f64, chart: &Chart, top: f64) {
    panel_title(svg, top, "Latency per request: p50 (solid) and p99 (pale), log scale");
    let values: Vec<f64> = chart
        .cells
        .iter()
        .flat_map(|c| c.points.iter().flatten())
        .flat_map(|p| [p.p50_us, p.p99_us])
        .filter(|&v| v > 0.0)
        .collect();
    let Some(lo) = values.iter().copied().reduce(f64::min) else {
        text(svg, width / 2.0, top + PANEL_HEIGHT / 2.0, "middle", 12, "", "no latency figures");
        return;
    };
    let hi = values.iter().copied().fold(lo, f64::max);
    let lo_exp = lo.log10().floor();
    let hi_exp = (hi * 1.3).log10().ceil().max(lo_exp + 1.0);
    let y_of = |v: f64| {
        let v = v.max(10f64.powf(lo_exp));
        top + PANEL_HEIGHT - (v.log10() - lo_exp) / (hi_exp - lo_exp) * PANEL_HEIGHT
    };
    let mut exp = lo_exp;
    while exp <= hi_exp {
        let y = y_of(10f64.powf(exp));
        line(svg, LEFT, y, width - RIGHT, y, r##"stroke="#e2e8f0""##);
        text(svg, LEFT - 6.0, y + 4.0, "end", 11, "", &decade_label(exp));
        exp += 1.0;
    }
    let bottom = top + PANEL_HEIGHT;
    for (g, cell) in chart.cells.iter().enumerate() {
        for (s, point) in cell.points.iter().enumerate() {
            let (x, w) = bar_x(width, g, chart.cells.len(), s, chart.series.len());
            let Some(p) = point else {
                text(svg, x + w / 2.0, bottom - 4.0, "middle", 9, "", "n/a");
                continue;
            };
            let color = PALETTE[s % PALETTE.len()];
            let y99 = y_of(p.p99_us);
            let y50 = y_of(p.p50_us);
            rect(svg, x, y99, w, bottom - y99, color, r#" fill-opacity="0.35""#);
            rect(svg, x + w * 0.2, y50, w * 0.6, bottom - y50, color, "");
            text(svg, x + w / 2.0, y99 - 4.0, "middle", 9, "", &short_latency(p.p99_us));
        }
    }
    let labels: Vec<(String, String, String)> =
        chart.cells.iter().map(|c| (c.id.clone(), c.label.clone(), String::new())).collect();
    group_labels(svg, width, top, &labels);
}

/// Bytes of RSS per key, one bar per server.
fn rss_panel(svg: &mut String, width: f64, chart: &Chart, top: f64, label: &str, values: &[Option<f64>]) {
    panel_title(svg, top, &format!("f: RSS bytes per key ({label})"));
    let max = values.iter().flatten().copied().fold(1.0, f64::max) * 1.2;
    linear_axis(svg, width, top, max, |v| format!("{v:.0} B"));
    let n = chart.series.len();
    for (s, value) in values.iter().enumerate() {
        let (x, w) = bar_x(width, s, n, 0, 1);
        let (x, w) = (x + w * 0.25, w * 0.5);
        let Some(value) = value else {
            text(svg, x + w / 2.0, top + PANEL_HEIGHT - 4.0, "middle", 10, "", "n/a");
            continue;
        };
        let h = value.max(0.0) / max * PANEL_HEIGHT;
        let y = top + PANEL_HEIGHT - h;
        rect(svg, x, y, w, h, PALETTE[s % PALETTE.len()], "");
        text(svg, x + w / 2.0, y - 4.0, "middle", 11, "", &format!("{value:.1} B"));
    }
    let labels: Vec<(String, String, String)> =
        chart.series.iter().map(|s| (s.clone(), String::new(), String::new())).collect();
    group_labels(svg, width, top, &labels);
}

/// Renders the whole chart as one SVG document.
pub fn render(chart: &Chart) -> String {
    let mut panels = Vec::new();
    if !chart.cells.is_empty() {
        panels.push(0);
        panels.push(1);
    }
    if chart.rss.is_some() {
        panels.push(2);
    }
    let panel_space = PANEL_HEIGHT + 90.0;
    let height = 110.0 + panels.len() as f64 * panel_space;
    let width = (LEFT + RIGHT + GROUP_WIDTH * chart.cells.len() as f64).max(MIN_WIDTH);
    let mut svg = String::with_capacity(16 << 10);
    svg.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ =
        writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" "#,);
    let _ = writeln!(svg, r#"     viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#);
    rect(&mut svg, 0.0, 0.0, width, height, "#ffffff", "");
    text(&mut svg, width / 2.0, 28.0, "middle", 18, r#" font-weight="bold""#, &chart.title);
    text(&mut svg, width / 2.0, 48.0, "middle", 12, r##" fill="#4a5568""##, &chart.subtitle);
    // Legend.
    let mut x = LEFT;
    for (s, name) in chart.series.iter().enumerate() {
        rect(&mut svg, x, 62.0, 12.0, 12.0, PALETTE[s % PALETTE.len()], "");
        text(&mut svg, x + 17.0, 72.0, "start", 12, "", name);
        x += 30.0 + 8.0 * name.len() as f64;
    }
    for (i, panel) in panels.iter().enumerate() {
        let top = 120.0 + i as f64 * panel_space;
        match panel {
            0 => throughput_panel(&mut svg, width, chart, top),
            1 => latency_panel(&mut svg, width, chart, top),
            _ => {
                if let Some((label, values)) = &chart.rss {
                    rss_panel(&mut svg, width, chart, top, label, values);
                }
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loose well-formedness: every tag closes in order, and text holds no raw `<`.
    fn check_balanced(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("every tag ends") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "nested < in {tag}");
            if tag.starts_with('?') || tag.starts_with('!') {
            } else if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.trim()), "closing tag");
            } else {
                let name = tag.split_whitespace().next().expect("tag name").trim_end_matches('/').to_string();
                names.push(name.clone());
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
        names
    }

    fn sample() -> Chart {
        let p = |ops: f64, p50: f64, p99: f64| Some(Point { ops_per_sec: ops, p50_us: p50, p99_us: p99 });
        Chart {
            title: "bankcache vs Redis vs memcached on AMD <EPYC> & co".into(),
            subtitle: "2 cores, 2025-01-01".into(),
            series: vec!["bankcache".into(), "redis".into(), "memcached".into(), "nginx".into()],
            cells: vec![
                Cell {
                    id: "a".into(),
                    label: "50 conn".into(),
                    points: vec![p(150e3, 300.0, 500.0), p(140e3, 310.0, 520.0), None, None],
                    baseline: Some(1),
                    target: Some(1.0),
                    verdict: "holds".into(),
                },
                Cell {
                    id: "b".into(),
                    label: "pipeline 16".into(),
                    points: vec![p(700e3, 900.0, 1500.0), p(690e3, 1000.0, 1600.0), p(150e3, 2.0, 9.0), None],
                    baseline: Some(1),
                    target: Some(1.2),
                    verdict: "MISSED by 15.4%".into(),
                },
                Cell {
                    id: "e".into(),
                    label: "200 KB".into(),
                    points: vec![p(25e3, 700.0, 3000.0), None, p(24e3, 750.0, 2900.0), None],
                    baseline: Some(1),
                    target: Some(1.0),
                    verdict: "n/a".into(),
                },
                Cell {
                    id: "file-put".into(),
                    label: "200 KB PUT".into(),
                    points: vec![p(3e3, 5e3, 9e3), None, None, p(1e3, 15e3, 30e3)],
                    baseline: Some(3),
                    target: Some(2.0),
                    verdict: "holds".into(),
                },
            ],
            rss: Some(("1000000 keys".into(), vec![Some(60.5), Some(133.0), None, None])),
        }
    }

    #[test]
    fn renders_a_well_formed_chart_with_every_cell() {
        let svg = render(&sample());
        assert!(svg.starts_with("<?xml"));
        let names = check_balanced(&svg);
        assert_eq!(names.first().map(String::as_str), Some("svg"));
        for id in ["a", "b", "e", "file-put"] {
            assert!(svg.contains(&format!(">{id}</text>")), "cell {id}");
        }
        assert!(svg.contains("f: RSS bytes per key"));
        assert!(svg.contains("AMD &lt;EPYC&gt; &amp; co"), "the title is escaped");
        assert!(svg.contains(">150k<") && svg.contains(">700k<"), "absolute labels");
        assert!(svg.contains(">60.5 B<"));
        assert!(svg.contains("normalized to the cell&apos;s peer (redis or nginx) = 1.0"), "{svg}");
        assert!(svg.contains("file-put target: 2.00x") && svg.contains(">MISSED by 15.4%<"));
        // Without throughput cells or without RSS, the other panels still render.
        let mut only_rss = sample();
        only_rss.cells.clear();
        check_balanced(&render(&only_rss));
        let mut no_rss = sample();
        no_rss.rss = None;
        for cell in &mut no_rss.cells {
            cell.baseline = None;
        }
        let svg = render(&no_rss);
        check_balanced(&svg);
        assert!(!svg.contains("RSS bytes per key"));
    }

    #[test]
    fn short_numbers_and_steps() {
        assert_eq!(short_number(152_301.0), "152k");
        assert_eq!(short_number(10_512.0), "10.5k");
        assert_eq!(short_number(1_520_000.0), "1.52M");
        assert_eq!(short_number(25.0), "25");
        assert_eq!(short_number(2.5), "2.50");
        assert_eq!(short_latency(1500.0), "1.50 ms");
        assert_eq!(decade_label(3.0), "1 ms");
        assert_eq!(decade_label(2.0), "100 us");
        assert_eq!(decade_label(-1.0), "0.1 us");
        assert_eq!(nice_step(1.15), 0.5);
        assert_eq!(nice_step(100.0), 20.0);
    }
}
