//! The one JSON line a run prints, the statistics behind it, and the timing of workloads
//! made of single calls.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::Workload;
use crate::database::Backend;
use crate::error::{BenchError, Context};
use crate::workloads::Measurement;

/// What a run measured. Rates and per-step figures are `null` where they do not apply.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `"w1"` … `"w6"`.
    pub workload: &'static str,
    /// `"sqlite"` or `"postgres"`.
    pub backend: &'static str,
    /// Measured workflows, or messages for w5 (warm-up runs excluded).
    pub n: usize,
    /// Warm-up workflows run before measuring.
    pub warm_up: usize,
    /// Median workflow latency, start to result (w5: a message's, `send` to `recv`; w6: from
    /// the relaunch call until a recovered workflow's body returned).
    pub median_ms: f64,
    /// 99th-percentile workflow latency, start to result (w5: a message's).
    pub p99_ms: f64,
    /// Wall time of the measured workflows.
    pub total_s: f64,
    /// Workflows completed per second of wall time (w5: messages round-tripped).
    pub wf_per_s: f64,
    /// Steps completed per second of wall time; `null` for a workload without steps.
    pub steps_per_s: Option<f64>,
    /// What one step adds to a workflow: (median of w1 − median of an empty workflow, run
    /// interleaved) / 10; w1 only.
    pub per_step_ms: Option<f64>,
    /// `median_ms` divided by the steps per workflow, start and finish included; w1 only.
    pub per_workflow_step_ms: Option<f64>,
    /// Median latency of the interleaved empty workflows; w1 only.
    pub empty_median_ms: Option<f64>,
    /// Median latency of a single-row autocommit INSERT on the same database, one client.
    pub floor_commit_ms: f64,
    /// `per_step_ms / floor_commit_ms`: what a step costs in commits; w1 only.
    pub commits_per_step: Option<f64>,
    /// Median latency from an enqueue call until the workflow's body starts, on an idle
    /// queue; w3 only.
    pub enqueue_start_median_ms: Option<f64>,
    /// 99th percentile of the same; w3 only.
    pub enqueue_start_p99_ms: Option<f64>,
    /// From the relaunch call until it returned, its recovery included; w6 only.
    pub launch_ms: Option<f64>,
    /// From the relaunch call until the first recovered workflow had completed; w6 only.
    pub first_completion_ms: Option<f64>,
    /// Figures particular to one workload (memory, wake-ups, a prefill), written at the top
    /// level of the line after the common ones.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// The report for `workload`'s `measurement` on `backend`, given the commit floor.
    pub fn new(
        workload: Workload,
        backend: Backend,
        measurement: &Measurement,
        floor_commit: Duration,
    ) -> Self {
        let mut latencies = measurement.latencies.clone();
        let median_ms = millis(median(&mut latencies));
        let p99_ms = millis(percentile(&mut latencies, 0.99));
        let total_s = measurement.total.as_secs_f64();
        let n = latencies.len();
        let steps = workload.steps_per_workflow();
        let floor_commit_ms = millis(floor_commit);
        let per_workflow_step_ms = (workload == Workload::W1).then(|| median_ms / f64::from(steps));
        let empty_median_ms = measurement
            .baseline
            .as_ref()
            .map(|b| millis(median(&mut b.clone())));
        let per_step_ms = empty_median_ms.map(|empty| (median_ms - empty) / f64::from(steps));
        Self {
            workload: workload.name(),
            backend: backend.name(),
            n,
            warm_up: measurement.warm_up,
            median_ms: round(median_ms),
            p99_ms: round(p99_ms),
            total_s: round(total_s),
            wf_per_s: round(n as f64 / total_s),
            steps_per_s: (steps > 0).then(|| round(f64::from(steps) * n as f64 / total_s)),
            per_step_ms: per_step_ms.map(round),
            per_workflow_step_ms: per_workflow_step_ms.map(round),
            empty_median_ms: empty_median_ms.map(round),
            floor_commit_ms: round(floor_commit_ms),
            commits_per_step: per_step_ms.map(|step| round(step / floor_commit_ms)),
            enqueue_start_median_ms: measurement
                .enqueue_to_start
                .as_ref()
                .map(|l| round(millis(median(&mut l.clone())))),
            enqueue_start_p99_ms: measurement
                .enqueue_to_start
                .as_ref()
                .map(|l| round(millis(percentile(&mut l.clone(), 0.99)))),
            launch_ms: measurement.launch.map(|d| round(millis(d))),
            first_completion_ms: measurement.first_completion.map(|d| round(millis(d))),
            extra: serde_json::Map::new(),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> Result<String, BenchError> {
        serde_json::to_string(self).context("writing the report")
    }
}

/// `warm_up` untimed calls, then `n` timed ones, one at a time; `call(k)` makes call `k`
/// (counted from 0 in each phase).
pub async fn time_calls<F, Fut>(
    warm_up: usize,
    n: usize,
    mut call: F,
) -> Result<Measurement, BenchError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), BenchError>>,
{
    for k in 0..warm_up {
        call(k).await?;
    }
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for k in 0..n {
        let one = Instant::now();
        call(k).await?;
        latencies.push(one.elapsed());
    }
    Ok(Measurement {
        latencies,
        total: started.elapsed(),
        warm_up,
        baseline: None,
        enqueue_to_start: None,
        launch: None,
        first_completion: None,
    })
}

/// The median of `samples` (sorting them); zero for none.
pub fn median(samples: &mut [Duration]) -> Duration {
    percentile(samples, 0.5)
}

/// The nearest-rank `quantile` (0 < q ≤ 1) of `samples` (sorting them); zero for none.
fn percentile(samples: &mut [Duration], quantile: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = (quantile * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// A duration in milliseconds.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Rounded to three decimals, so the line stays readable.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    /// Percentiles use nearest rank, so they are always one of the samples.
    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples = ms(&[5, 1, 4, 2, 3]);
        assert_eq!(median(&mut samples), Duration::from_millis(3));
        let mut hundred: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut hundred, 0.99), Duration::from_millis(99));
        assert_eq!(median(&mut []), Duration::ZERO);
    }
}
