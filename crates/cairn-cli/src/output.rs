//! Printing: aligned tables, relative times, coloured statuses (on a terminal only), JSON,
//! and progress bars (on a terminal only).

use std::io::{IsTerminal, Write};

use chrono::{DateTime, TimeZone, Utc};

/// Where and how results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`: one JSON document on stdout.
    pub json: bool,
    /// Whether stdout is a terminal that takes colours (not with `NO_COLOR` set).
    pub color: bool,
    /// Whether stderr is a terminal (progress bars go there).
    pub progress: bool,
}

impl Output {
    /// The output for this process's stdout and stderr.
    pub fn detect(json: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            json,
            color: !json && !no_color && std::io::stdout().is_terminal(),
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// Print `value` as the one JSON document of this run.
    pub fn json(&self, value: &serde_json::Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_owned());
        println!("{text}");
    }

    /// A workflow status, coloured on a terminal.
    pub fn status(&self, status: &str) -> Cell {
        let code = match status {
            "SUCCESS" => "32",
            "ERROR" | "MAX_RECOVERY_ATTEMPTS_EXCEEDED" => "31",
            "CANCELLED" => "33",
            "PENDING" => "34",
            "ENQUEUED" | "DELAYED" => "36",
            "ACTIVE" => "32",
            "PAUSED" => "33",
            _ => "",
        };
        Cell::styled(status, if self.color { code } else { "" })
    }

    /// A dimmed cell (absent values), on a terminal.
    pub fn dim(&self, text: &str) -> Cell {
        Cell::styled(text, if self.color { "2" } else { "" })
    }

    /// A progress bar of `len` steps on stderr when it is a terminal; hidden otherwise.
    pub fn progress_bar(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar
    }

    /// A spinner on stderr when it is a terminal (for one long call); hidden otherwise.
    pub fn spinner(&self, what: &str) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        bar
    }
}

/// One table cell: its text, and the ANSI style it is printed with (padding excluded).
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    style: &'static str,
}

impl Cell {
    /// The text, with its style's escape codes if it has one.
    pub fn render(&self) -> String {
        if self.style.is_empty() {
            self.text.clone()
        } else {
            format!("\x1b[{}m{}\x1b[0m", self.style, self.text)
        }
    }

    fn styled(text: &str, style: &'static str) -> Self {
        Self {
            text: text.to_owned(),
            style,
        }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Self {
        Self {
            text: text.into(),
            style: "",
        }
    }
}

/// An aligned table with a header row.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    /// Add a row (one cell per column).
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// Print the table on stdout, columns separated by two spaces; `empty` instead when it
    /// has no rows.
    pub fn print(&self, output: &Output, empty: &str) {
        if self.rows.is_empty() {
            println!("{empty}");
            return;
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.text.chars().count());
                }
            }
        }
        let mut out = std::io::stdout().lock();
        let header: Vec<Cell> = self
            .header
            .iter()
            .map(|h| Cell::styled(h, if output.color { "1" } else { "" }))
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let last = i + 1 == row.len();
                line.push_str(&cell.render());
                if !last {
                    let pad = widths[i].saturating_sub(cell.text.chars().count()) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

/// An epoch-milliseconds instant as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> Option<String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// An optional epoch-milliseconds instant as JSON: an RFC 3339 string or `null`.
pub fn time_json(ms: Option<i64>) -> serde_json::Value {
    ms.and_then(rfc3339)
        .map(serde_json::Value::String)
        .unwrap_or(serde_json::Value::Null)
}

/// How long ago (or until) an instant is, for people: `12s ago`, `3m ago`, `in 2h`.
pub fn relative(ms: i64) -> String {
    let now = Utc::now().timestamp_millis();
    let delta = now - ms;
    let text = short_duration(delta.unsigned_abs() / 1000 * 1000, false);
    if delta.abs() < 1000 {
        "just now".to_owned()
    } else if delta > 0 {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// A relative time for an optional instant, `-` when absent.
pub fn relative_opt(ms: Option<i64>) -> String {
    ms.map(relative).unwrap_or_else(|| "-".to_owned())
}

/// A `DateTime` as a relative time.
pub fn relative_time(time: &DateTime<Utc>) -> String {
    relative(time.timestamp_millis())
}

/// A duration in milliseconds, for people: `850ms`, `4.2s`, `3m12s`, `2h05m`, `3d4h`.
pub fn short_duration(ms: u64, precise: bool) -> String {
    let secs = ms / 1000;
    match ms {
        _ if ms < 1000 && precise => format!("{ms}ms"),
        _ if ms < 1000 => "0s".to_owned(),
        _ if secs < 60 && precise => format!("{:.1}s", ms as f64 / 1000.0),
        _ if secs < 60 => format!("{secs}s"),
        _ if secs < 3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ if secs < 86_400 => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{}h", secs / 86_400, (secs % 86_400) / 3600),
    }
    .replace("m00s", "m")
    .replace("h00m", "h")
    .replace("d0h", "d")
}

/// The time between two optional instants, `-` unless both are known.
pub fn duration_between(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(start), Some(end)) if end >= start => short_duration((end - start) as u64, true),
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations read the way people write them.
    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(850, true), "850ms");
        assert_eq!(short_duration(4_200, true), "4.2s");
        assert_eq!(short_duration(4_200, false), "4s");
        assert_eq!(short_duration(180_000, false), "3m");
        assert_eq!(short_duration(192_000, false), "3m12s");
        assert_eq!(short_duration(2 * 3_600_000 + 300_000, false), "2h05m");
        assert_eq!(short_duration(3 * 86_400_000, false), "3d");
    }

    /// Relative times say ago or in.
    #[test]
    fn times_are_relative() {
        let now = Utc::now().timestamp_millis();
        assert_eq!(relative(now), "just now");
        assert_eq!(relative(now - 3 * 60_000 - 500), "3m ago");
        assert!(relative(now + 7_200_000 + 5_000).starts_with("in 2h"));
        assert_eq!(relative_opt(None), "-");
    }

    /// Columns are padded to their widest cell, colour codes excluded.
    #[test]
    fn cells_pad_without_counting_colours() {
        let colored = Output {
            json: false,
            color: true,
            progress: false,
        };
        let cell = colored.status("SUCCESS");
        assert_eq!(cell.render(), "\x1b[32mSUCCESS\x1b[0m");
        assert_eq!(cell.text.chars().count(), 7);
        let plain = Output {
            color: false,
            ..colored
        };
        assert_eq!(plain.status("SUCCESS").render(), "SUCCESS");
    }
}
