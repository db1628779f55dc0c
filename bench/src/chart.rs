//! Horizontal grouped bar charts as hand-written SVG: no plotting dependency, and a file a
//! browser or GitHub shows as it is.

use std::fmt::Write;

/// One bar: a contender's median, with its measured range drawn as a whisker.
pub struct Bar {
    /// The contender.
    pub label: String,
    /// The median.
    pub value: f64,
    /// The smallest and largest measurement (equal to `value` for a single one).
    pub range: (f64, f64),
}

/// Bars measured together, scaled to each other (one connection count, one depth...).
pub struct Group {
    /// What the group measured, shown above its bars.
    pub label: String,
    /// Its bars, top to bottom.
    pub bars: Vec<Bar>,
}

const WIDTH: f64 = 760.0;
const LABEL_W: f64 = 190.0;
const BAR_AREA: f64 = 440.0;
const BAR_H: f64 = 18.0;
const GAP: f64 = 5.0;
const GROUP_HEAD: f64 = 26.0;
const OURS: [&str; 3] = ["#e8590c", "#f08c00", "#c92a2a"];
const PEERS: [&str; 6] = [
    "#1971c2", "#2f9e44", "#7048e8", "#495057", "#0c8599", "#a61e4d",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Colours by contender, the same in every group: aioloop's in warm tones, peers' in cool.
fn colours(groups: &[Group]) -> Vec<(String, &'static str)> {
    let mut seen: Vec<(String, &'static str)> = Vec::new();
    let (mut ours, mut peers) = (0, 0);
    for bar in groups.iter().flat_map(|g| &g.bars) {
        if seen.iter().any(|(l, _)| *l == bar.label) {
            continue;
        }
        let colour = if bar.label.starts_with("aioloop") {
            ours += 1;
            OURS[(ours - 1) % OURS.len()]
        } else {
            peers += 1;
            PEERS[(peers - 1) % PEERS.len()]
        };
        seen.push((bar.label.clone(), colour));
    }
    seen
}

/// A short form of `v`: 3 significant digits, with k/M for large values.
fn short(v: f64) -> String {
    let (v, suffix) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let decimals = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    };
    format!("{v:.decimals$}{suffix}")
}

/// Draws `groups` as horizontal bars, each group scaled to its own largest value; `note`
/// goes under the title (say there which way is better).
pub fn bars(title: &str, note: &str, groups: &[Group]) -> String {
    let colours = colours(groups);
    let rows: usize = groups.iter().map(|g| g.bars.len()).sum();
    let height = 64.0 + groups.len() as f64 * GROUP_HEAD + rows as f64 * (BAR_H + GAP) + 12.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="12" y="22" font-size="15" font-weight="bold">{}</text>
<text x="12" y="40" fill="#555">{}</text>
"##,
        escape(title),
        escape(note)
    );
    let mut y = 56.0;
    for group in groups {
        let _ = writeln!(
            svg,
            r##"<text x="12" y="{:.1}" font-weight="bold">{}</text>"##,
            y + 16.0,
            escape(&group.label)
        );
        y += GROUP_HEAD;
        let max = (group.bars.iter())
            .map(|b| b.range.1.max(b.value))
            .fold(0.0, f64::max);
        let scale = if max > 0.0 { BAR_AREA / max } else { 0.0 };
        for bar in &group.bars {
            let colour = colours.iter().find(|(l, _)| *l == bar.label).unwrap().1;
            let w = (bar.value * scale).max(1.0);
            let mid = y + BAR_H / 2.0;
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>
<rect x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{colour}" rx="2"/>
"##,
                LABEL_W - 8.0,
                mid + 4.0,
                escape(&bar.label)
            );
            let (lo, hi) = bar.range;
            if hi > lo {
                let (x0, x1) = (LABEL_W + lo * scale, LABEL_W + hi * scale);
                let (top, bottom) = (mid - 4.0, mid + 4.0);
                let _ = writeln!(
                    svg,
                    r##"<path d="M{x0:.1} {mid:.1}H{x1:.1}M{x0:.1} {top:.1}V{bottom:.1}M{x1:.1} {top:.1}V{bottom:.1}" stroke="#222" stroke-width="1"/>"##
                );
            }
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}">{}</text>"##,
                LABEL_W + (hi.max(bar.value) * scale) + 6.0,
                mid + 4.0,
                short(bar.value)
            );
            y += BAR_H + GAP;
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers_keep_three_digits() {
        assert_eq!(short(123_456.0), "123k");
        assert_eq!(short(12_345.0), "12.3k");
        assert_eq!(short(1.234), "1.23");
        assert_eq!(short(2_500_000.0), "2.50M");
    }

    #[test]
    fn a_chart_names_every_bar_and_escapes_labels() {
        let svg = bars(
            "t",
            "higher is better",
            &[Group {
                label: "1 connection".into(),
                bars: vec![
                    Bar {
                        label: "aioloop <edge>".into(),
                        value: 2.0,
                        range: (1.0, 3.0),
                    },
                    Bar {
                        label: "tokio & co".into(),
                        value: 1.0,
                        range: (1.0, 1.0),
                    },
                ],
            }],
        );
        assert!(svg.contains("aioloop &lt;edge&gt;") && svg.contains("tokio &amp; co"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
