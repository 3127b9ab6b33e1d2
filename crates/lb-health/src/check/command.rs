//! The command check (keepalived `MISC_CHECK`, `vrrp_script`): a shell
//! command whose exit status decides.

use std::sync::Arc;

use tokio::process::Command;

use super::{CheckError, CheckFuture, Checker, FailureKind, Target};

/// Healthy when `sh -c <command>` exits with status 0.
///
/// The command sees the backend in its environment: `LB_BACKEND_ADDR`
/// (`IP:port`), `LB_BACKEND_IP`, `LB_BACKEND_PORT` and `LB_BACKEND_NAME`.
/// Its standard input, output and error are `/dev/null`.
///
/// On timeout the command is killed, with everything it started: on Unix
/// it runs in a process group of its own, and the whole group gets
/// `SIGKILL` (sent through `sh -c 'kill -s KILL -- -PGID'`, as this crate
/// uses no `unsafe` code).
///
/// ```
/// use lb_health::Check;
/// let check = Check::command("curl -fsS \"http://$LB_BACKEND_ADDR/ready\"")
///     .env("CURL_CA_BUNDLE", "/etc/ssl/ca.pem");
/// ```
#[derive(Clone, Debug)]
pub struct CommandCheck {
    command: Arc<str>,
    env: Vec<(Arc<str>, Arc<str>)>,
}

impl CommandCheck {
    /// Run `command` with `sh -c`.
    pub fn new(command: impl Into<Arc<str>>) -> Self {
        CommandCheck {
            command: command.into(),
            env: Vec::new(),
        }
    }

    /// Add an environment variable.
    pub fn env(mut self, key: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    async fn run(&self, target: &Target) -> Result<(), CheckError> {
        let addr = target.addr();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&*self.command)
            .env("LB_BACKEND_ADDR", addr.to_string())
            .env("LB_BACKEND_IP", addr.ip().to_string())
            .env("LB_BACKEND_PORT", addr.port().to_string())
            .env("LB_BACKEND_NAME", target.name())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(&**k, &**v);
        }
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            CheckError::new(
                FailureKind::Exit,
                format!("cannot start sh -c {:?}: {e}", self.command),
            )
        })?;
        let mut group = GroupKill(child.id());
        let status = child.wait().await;
        group.0 = None; // it ended by itself: nothing to kill
        let status = status.map_err(|e| {
            CheckError::new(FailureKind::Exit, format!("waiting for the command: {e}"))
        })?;
        if status.success() {
            return Ok(());
        }
        Err(CheckError::new(
            FailureKind::Exit,
            match status.code() {
                Some(code) => format!("command exited with status {code}"),
                None => "command was killed by a signal".to_owned(),
            },
        ))
    }
}

/// Kills the command's process group when the check is dropped before the
/// command ended (the timeout). The child itself is also killed by
/// `kill_on_drop`; while any member of the group lives, its id cannot be
/// reused, so the signal reaches only the command's processes.
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.take() {
            let kill = move || {
                let _ = std::process::Command::new("sh")
                    .args([
                        "-c",
                        "kill -s KILL -- \"-$1\" 2>/dev/null",
                        "sh",
                        &pgid.to_string(),
                    ])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            // Off the async thread: spawning and reaping `sh` takes a few ms.
            if std::thread::Builder::new()
                .name("lb-health-kill".into())
                .spawn(kill)
                .is_err()
            {
                kill();
            }
        }
    }
}

impl Checker for CommandCheck {
    fn check<'a>(&'a self, target: &'a Target) -> CheckFuture<'a> {
        Box::pin(self.run(target))
    }

    fn name(&self) -> &str {
        "command"
    }

    fn key(&self) -> Option<String> {
        Some(format!("command {:?} env={:?}", self.command, self.env))
    }
}
