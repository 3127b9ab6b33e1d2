//! Starting the configured health checking.

use std::sync::Arc;

use lb_core::{FanOut, Observer};
use lb_health::{Check, CheckerHandle, HealthChecker, HealthError, PassiveHealth, Supervisor};
use lb_sched::Balancer;

use super::HealthSettings;

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
}

impl HealthSettings {
    /// Start health checking for `lb` on the current tokio runtime: passive
    /// checks always (nginx `max_fails` within `fail_timeout`; `max_fails =
    /// 0` turns them off), active checks when enabled (an HTTP GET of
    /// `path`, or a TCP connect).
    pub fn start(&self, lb: &Balancer) -> Result<RunningHealth, HealthError> {
        let supervisor = Supervisor::new(lb.pool().clone());
        let mut passive = PassiveHealth::builder(supervisor.clone());
        if self.max_fails > 0 {
            passive = passive.max_fails(self.max_fails, self.fail_timeout);
        }
        let observer = FanOut::new()
            .with(passive.build())
            .with(Arc::new(lb.clone()));
        let checker = if self.enabled {
            let check: Check = match &self.path {
                Some(path) => Check::http(path.as_str()).into(),
                None => Check::tcp(),
            };
            let checker = HealthChecker::new(supervisor.clone(), check)
                .interval(self.interval)
                .timeout(self.timeout)
                .rise(self.rise)
                .fall(self.fall)
                .spawn()?;
            Some(checker)
        } else {
            None
        };
        Ok(RunningHealth {
            observer: Arc::new(observer),
            supervisor,
            checker,
        })
    }
}
