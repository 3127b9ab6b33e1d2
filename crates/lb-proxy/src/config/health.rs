//! Starting the configured health checking.

use std::sync::Arc;

use lb_core::{FanOut, Observer};
use lb_health::{Check, CheckerHandle, HealthChecker, HealthError, PassiveHealth, Supervisor};
use lb_sched::Balancer;

use super::{Config, HealthSettings};
use crate::http::{ForwardConfig, SlowResponse};

/// Health checking running for one balancer: hand [`observer`](Self::observer)
/// to the forwarders; keep the value alive as long as the proxy runs.
#[derive(Debug)]
pub struct RunningHealth {
    /// Receives every forwarding outcome: nginx `max_fails` passive health,
    /// and the scheduler (latency-aware schedulers learn from it).
    pub observer: Arc<dyn Observer>,
    /// The state machine of every backend (operator controls, events).
    pub supervisor: Supervisor,
    /// The active checker, when `[health]` asked for one.
    pub checker: Option<CheckerHandle>,
    /// The early report of late response heads for the forwarder, with
    /// active checks (see [`HealthSettings::slow_response`]).
    pub slow_response: Option<SlowResponse>,
}

impl RunningHealth {
    /// `config`'s forwarding settings, with this health checking's
    /// [`slow_response`](Self::slow_response) report.
    pub fn forward_config(&self, config: &Config) -> ForwardConfig {
        ForwardConfig {
            slow_response: self.slow_response.clone(),
            ..config.forward_config()
        }
    }
}

impl HealthSettings {
    /// Start health checking for `lb` on the current tokio runtime: passive
    /// checks always (nginx `max_fails` within `fail_timeout`; `max_fails =
    /// 0` turns them off), active checks when enabled (an HTTP GET of
    /// `path`, or a TCP connect), and with them the slow-response report
    /// (hand [`RunningHealth::forward_config`] to the forwarder).
    pub fn start(&self, lb: &Balancer) -> Result<RunningHealth, HealthError> {
        let supervisor = Supervisor::new(lb.pool().clone());
        let mut passive = PassiveHealth::builder(supervisor.clone());
        if self.max_fails > 0 {
            passive = passive.max_fails(self.max_fails, self.fail_timeout);
        }
        let observer: Arc<dyn Observer> = Arc::new(
            FanOut::new()
                .with(passive.build())
                .with(Arc::new(lb.clone())),
        );
        let checker = if self.enabled {
            let check: Check = match &self.path {
                Some(path) => Check::http(path.as_str()).into(),
                None => Check::tcp(),
            };
            let mut checker = HealthChecker::new(supervisor.clone(), check)
                .interval(self.interval)
                .timeout(self.timeout)
                .rise(self.rise)
                .fall(self.fall);
            if let Some(d) = self.fastinter {
                checker = checker.fast_interval(d);
            }
            if let Some(d) = self.downinter {
                checker = checker.down_interval(d);
            }
            Some(checker.spawn()?)
        } else {
            None
        };
        let after = self.slow_response.unwrap_or(self.timeout);
        let slow_response = (self.enabled && !after.is_zero()).then(|| SlowResponse {
            after,
            observer: observer.clone(),
        });
        Ok(RunningHealth {
            observer,
            supervisor,
            checker,
            slow_response,
        })
    }
}
