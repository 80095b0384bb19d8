//! The process's memory, as Linux reports it in `/proc/self/status`: the resident set now
//! (`VmRSS`) and its peak (`VmHWM`), which [`reset_peak`] lowers to the current size so a
//! phase's peak can be told from the set-up's.

use crate::error::{BenchError, Context};

/// The resident set now, in bytes.
pub fn rss() -> Result<u64, BenchError> {
    status_field("VmRSS")
}

/// The resident set's peak since the process started or [`reset_peak`] last ran, in bytes.
pub fn peak() -> Result<u64, BenchError> {
    status_field("VmHWM")
}

/// Lower the recorded peak to the current resident set (writing `5` to
/// `/proc/self/clear_refs`); without that (an old kernel), the peak stays the process's own.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Bytes in megabytes (2^20), rounded to one decimal.
pub fn megabytes(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 10.0).round() / 10.0
}

/// A `kB` line of `/proc/self/status`, in bytes.
fn status_field(name: &str) -> Result<u64, BenchError> {
    let doing = format!("reading {name} from /proc/self/status");
    let status = std::fs::read_to_string("/proc/self/status").context(doing.clone())?;
    status
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?;
            value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::new(doing, "no such line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resident set is read, and never exceeds its peak.
    #[test]
    fn the_resident_set_stays_within_its_peak() {
        let now = rss().expect("VmRSS");
        let peak = peak().expect("VmHWM");
        assert!(now > 0 && now <= peak, "rss {now}, peak {peak}");
    }
}
