//! Write-policy plugins, compatible with strfry's: a long-lived process the relay asks
//! about every new event that passed its own checks (see [`protocol`] for the lines).
//!
//! One task owns the process: it writes requests to the plugin's standard input as they
//! come, reads answers from its standard output and hands each to the request with that
//! event id (several may be in flight; two requests for one id are answered in order). A
//! plugin that exits is started again (after a pause that doubles up to 5 s), and one whose
//! file changes is restarted to load the new version. A request that gets no answer within
//! `--write-policy-timeout-ms` (the plugin is slow, crashed, or printed something else) is
//! decided by `--write-policy-on-error`.

pub mod protocol;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::KeyValue;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::{mpsc, oneshot},
};

use crate::{
    config::OnError,
    metrics::Metrics,
    nostr::{Reason, VerifiedEvent, hex},
};
pub use protocol::SourceType;
use protocol::{Action, Answer, Request};

/// What the policy decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Store and deliver it.
    Accept,
    /// Refuse it.
    Reject(Reason),
    /// Answer `OK true`; neither store nor deliver it.
    ShadowReject,
}

/// Requests waiting to be written to the plugin.
const QUEUE: usize = 4096;
/// How often the plugin's file is checked for a new version.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Longest pause before starting a plugin that exited again.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(5);

/// A running write-policy plugin.
pub struct WritePolicy {
    requests: mpsc::Sender<Pending>,
    timeout: Duration,
    on_error: OnError,
    metrics: Arc<Metrics>,
}

/// One request on its way to the plugin.
struct Pending {
    id: String,
    line: String,
    reply: oneshot::Sender<Answer>,
}

impl WritePolicy {
    /// Starts `command` (run by `sh -c`) and the task that owns it. Call it inside a tokio
    /// runtime.
    pub fn start(
        command: String,
        timeout: Duration,
        on_error: OnError,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (requests, queue) = mpsc::channel(QUEUE);
        tokio::spawn(supervise(command, queue));
        Arc::new(Self {
            requests,
            timeout,
            on_error,
            metrics,
        })
    }

    /// Asks the plugin about `event`, from `source` (`info`: its address), whose connection
    /// authenticated as `authed`.
    pub async fn judge(
        &self,
        event: &VerifiedEvent,
        source: SourceType,
        info: &str,
        authed: Option<[u8; 32]>,
    ) -> Decision {
        let started = Instant::now();
        let id = event.event.id_hex();
        let raw = serde_json::value::RawValue::from_string(event.json.to_string());
        let line = raw.ok().and_then(|raw| {
            serde_json::to_string(&Request {
                kind: "new",
                event: &raw,
                received_at: crate::policy::now(),
                source_type: source,
                source_info: info,
                authed: authed.map(|p| hex::encode(&p)),
            })
            .ok()
        });
        let (reply, answer) = oneshot::channel();
        let sent = match line {
            Some(line) => self.requests.try_send(Pending { id, line, reply }).is_ok(),
            None => false,
        };
        let outcome = if sent {
            match tokio::time::timeout(self.timeout, answer).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err("unavailable"),
                Err(_) => Err("timeout"),
            }
        } else {
            Err("unavailable")
        };
        let duration = started.elapsed().as_secs_f64();
        self.metrics.write_policy_duration.record(duration, &[]);
        let (label, decision) = match outcome {
            Ok(answer) => match answer.action {
                Action::Accept => ("accept", Decision::Accept),
                Action::Reject => ("reject", Decision::Reject(answer.reason())),
                Action::ShadowReject => ("shadowReject", Decision::ShadowReject),
            },
            Err(why) => (why, self.on_error()),
        };
        let label = KeyValue::new("action", label);
        self.metrics.write_policy_decisions.add(1, &[label]);
        decision
    }

    fn on_error(&self) -> Decision {
        match self.on_error {
            OnError::Accept => Decision::Accept,
            OnError::Reject => Decision::Reject(Reason::error(
                "the relay's write policy could not judge this event; try again later",
            )),
        }
    }
}

/// Runs the plugin for as long as the relay runs: starts it, feeds it, restarts it.
async fn supervise(command: String, mut queue: mpsc::Receiver<Pending>) {
    let file = watched_file(&command);
    let mut pause = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match spawn(&command) {
            Ok((child, stdin, stdout)) => {
                let version = modified(file.as_ref());
                let ended = serve(child, stdin, stdout, &mut queue, file.as_ref(), version).await;
                if ended == Ended::QueueClosed {
                    return;
                }
                if ended == Ended::Reload {
                    tracing::info!(%command, "the write-policy plugin changed; restarting it");
                    continue;
                }
                tracing::warn!(%command, "the write-policy plugin exited; starting it again");
            }
            Err(error) => {
                tracing::warn!(%command, %error, "could not start the write-policy plugin")
            }
        }
        if started.elapsed() > MAX_RESTART_PAUSE * 2 {
            pause = Duration::from_millis(100);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RESTART_PAUSE);
    }
}

fn spawn(command: &str) -> std::io::Result<(Child, ChildStdin, tokio::process::ChildStdout)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    Ok((child, stdin, stdout))
}

/// Why one run of the plugin ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The process exited or its pipes broke.
    Exited,
    /// Its file changed.
    Reload,
    /// The relay dropped the policy.
    QueueClosed,
}

/// Feeds one run of the plugin until it ends; requests still waiting then get no answer
/// (their senders are dropped), which their callers count as the plugin being unavailable.
async fn serve(
    mut child: Child,
    mut stdin: ChildStdin,
    stdout: tokio::process::ChildStdout,
    queue: &mut mpsc::Receiver<Pending>,
    file: Option<&PathBuf>,
    version: Option<SystemTime>,
) -> Ended {
    let mut lines = BufReader::new(stdout).lines();
    let mut waiting: HashMap<String, VecDeque<oneshot::Sender<Answer>>> = HashMap::new();
    let mut reload = tokio::time::interval(RELOAD_CHECK);
    let ended = loop {
        tokio::select! {
            request = queue.recv() => {
                let Some(Pending { id, mut line, reply }) = request else {
                    break Ended::QueueClosed;
                };
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break Ended::Exited;
                }
                waiting.entry(id).or_default().push_back(reply);
            }
            line = lines.next_line() => {
                let Ok(Some(line)) = line else {
                    break Ended::Exited;
                };
                let Some(answer) = Answer::parse(&line) else {
                    tracing::warn!(line = %line.chars().take(200).collect::<String>(), "the write-policy plugin printed something that is not an answer");
                    continue;
                };
                let id = answer.id.clone();
                if let Some(waiters) = waiting.get_mut(&id) {
                    if let Some(reply) = waiters.pop_front() {
                        let _ = reply.send(answer);
                    }
                    if waiters.is_empty() {
                        waiting.remove(&id);
                    }
                }
            }
            _ = reload.tick() => {
                // Requests whose callers stopped waiting are forgotten.
                waiting.retain(|_, waiters| {
                    waiters.retain(|w| !w.is_closed());
                    !waiters.is_empty()
                });
                if file.is_some() && modified(file) != version {
                    break Ended::Reload;
                }
            }
        }
    };
    let _ = child.kill().await;
    ended
}

/// The plugin's own file, when the command starts with the path of one.
fn watched_file(command: &str) -> Option<PathBuf> {
    let first = command.split_whitespace().next()?;
    let path = PathBuf::from(first);
    path.is_file().then_some(path)
}

fn modified(file: Option<&PathBuf>) -> Option<SystemTime> {
    std::fs::metadata(file?).and_then(|m| m.modified()).ok()
}
