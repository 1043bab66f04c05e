//! [`SchedulerConfig`]: kube-scheduler's settings of the same meaning.

use std::time::Duration;

use crate::{pod_info::DEFAULT_SCHEDULER_NAME, Error};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The `spec.schedulerName` of the pods this scheduler places (pods without one ask for
    /// `default-scheduler`); also the reporting controller of its Events.
    pub scheduler_name: String,
    /// Bindings in flight at once.
    pub bind_concurrency: usize,
    /// `percentageOfNodesToScore` (0–100): `None` is kube-scheduler's adaptive default.
    pub percentage_of_nodes_to_score: Option<u32>,
    /// `podInitialBackoffSeconds`.
    pub initial_backoff: Duration,
    /// `podMaxBackoffSeconds`.
    pub max_backoff: Duration,
    /// Where a pod's last write's trace is found: each decision continues it.
    pub write_traces: crate::trace::WriteTraces,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            bind_concurrency: 32,
            percentage_of_nodes_to_score: None,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            write_traces: Default::default(),
        }
    }
}

impl SchedulerConfig {
    /// Reject settings kube-scheduler would reject.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: &str| Err(Error::Config(msg.to_string()));
        if self.scheduler_name.is_empty() {
            return invalid("scheduler_name must not be empty");
        }
        if self.bind_concurrency == 0 {
            return invalid("bind_concurrency must be at least 1");
        }
        if self.percentage_of_nodes_to_score.is_some_and(|p| p > 100) {
            return invalid("percentage_of_nodes_to_score must be between 0 and 100");
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return invalid("backoffs must satisfy 0 < initial_backoff <= max_backoff");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_not() {
        assert!(SchedulerConfig::default().validate().is_ok());
        let bad = [
            SchedulerConfig { bind_concurrency: 0, ..Default::default() },
            SchedulerConfig { percentage_of_nodes_to_score: Some(101), ..Default::default() },
            SchedulerConfig { max_backoff: Duration::from_millis(1), ..Default::default() },
            SchedulerConfig { scheduler_name: String::new(), ..Default::default() },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
