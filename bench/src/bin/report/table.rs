//! Markdown tables, and the per-contender samples behind them.

use aioloop_bench::chart::{Bar, Group};
use aioloop_bench::stats::Samples;

/// A Markdown table, built row by row.
pub struct Table {
    text: String,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        let mut text = format!("| {} |\n|", headers.join(" | "));
        for (i, _) in headers.iter().enumerate() {
            text.push_str(if i == 0 { "---|" } else { "---:|" });
        }
        text.push('\n');
        Table { text }
    }

    pub fn row(&mut self, cells: &[String]) {
        self.text.push_str(&format!("| {} |\n", cells.join(" | ")));
    }

    pub fn render(self) -> String {
        self.text + "\n"
    }
}

/// Samples of one figure per contender, in the order the contenders were first seen.
#[derive(Default)]
pub struct Results {
    pub entries: Vec<(String, Samples)>,
}

impl Results {
    pub fn push(&mut self, contender: &str, value: f64) {
        match self.entries.iter_mut().find(|(c, _)| c == contender) {
            Some((_, s)) => s.push(value),
            None => self
                .entries
                .push((contender.to_string(), Samples(vec![value]))),
        }
    }

    pub fn get(&self, contender: &str) -> Option<&Samples> {
        self.entries
            .iter()
            .find(|(c, _)| c == contender)
            .map(|(_, s)| s)
    }

    pub fn median(&self, contender: &str) -> f64 {
        self.get(contender).map_or(f64::NAN, Samples::median)
    }

    /// The contender with the best median: the highest, or the lowest if `lower_wins`.
    pub fn best(&self, lower_wins: bool) -> &str {
        let by_median =
            |a: &&(String, Samples), b: &&(String, Samples)| a.1.median().total_cmp(&b.1.median());
        let best = if lower_wins {
            self.entries.iter().min_by(by_median)
        } else {
            self.entries.iter().max_by(by_median)
        };
        best.map_or("nobody", |(c, _)| c.as_str())
    }

    /// A chart group of these results' medians and ranges.
    pub fn group(&self, label: &str) -> Group {
        Group {
            label: label.to_string(),
            bars: (self.entries.iter())
                .map(|(c, s)| Bar {
                    label: c.clone(),
                    value: s.median(),
                    range: s.range(),
                })
                .collect(),
        }
    }
}

/// `a / b` as a ratio for tables: `1.23×`.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}
