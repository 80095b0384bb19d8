//! The side file a crash test's worker processes write to and the test reads: one line per
//! event, appended with a single `write` call so lines from concurrent tasks (and successive
//! processes) never interleave.

use std::io::Write;
use std::path::Path;

/// Append `line` to the side file named by the environment variable `var`.
pub fn append(var: &str, line: &str) {
    let path = std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the side file");
    file.write_all(format!("{line}\n").as_bytes())
        .expect("write the side file");
}

/// Every line of the side file so far (none if it does not exist yet).
pub fn read(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
