//! `--handler exec:COMMAND`: one child process for the whole run, one JSON line per
//! request on its stdin, one per answer on its stdout, answers in any order.
//!
//! A supervisor task owns the child. Whatever goes wrong with it (it exits, prints a line
//! that is not an answer, names a request never sent) ends that child, and a new one is
//! started and sent every request the old one had not answered. A request that sees
//! [`RESENDS_PER_ATTEMPT_MAX`] children end with it unanswered is answered "retry" with the
//! reason (one attempt spent, then the pool's backoff): a poison event that kills every
//! child ends as a dead letter with that reason instead of crashing children forever.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use super::{clip_reason, Answer, Call, Handler};

/// Longest answer line read from the child.
pub const ANSWER_LINE_BYTES_MAX: usize = 64 * 1024;

/// Pause before restarting a child that died soon after it started; it doubles up to
/// [`RESTART_PAUSE_MS_MAX`] while the child keeps dying young.
pub const RESTART_PAUSE_MS_MIN: u64 = 100;

/// Longest pause before a restart.
pub const RESTART_PAUSE_MS_MAX: u64 = 5_000;

/// How long a child whose stdout ended is given to exit before it is stopped.
pub const EXIT_WAIT_MS: u64 = 500;

/// A child that lived this long before dying is restarted without a pause.
pub const HEALTHY_LIFETIME_MS: u64 = 5_000;

const _: () = assert!(RESTART_PAUSE_MS_MIN <= RESTART_PAUSE_MS_MAX);

/// Runs `sh -c COMMAND` and talks to it in JSON lines.
#[derive(Debug)]
pub struct ExecHandler {
    command: String,
    next_request: AtomicU64,
    requests: OnceLock<mpsc::UnboundedSender<Request>>,
}

#[derive(Debug)]
struct Request {
    number: u64,
    line: String,
    reply: oneshot::Sender<Answer>,
}

impl ExecHandler {
    /// A handler that starts `command` (through `sh -c`) on its first call.
    pub fn new(command: impl Into<String>) -> Self {
        ExecHandler {
            command: command.into(),
            next_request: AtomicU64::new(1),
            requests: OnceLock::new(),
        }
    }

    /// The command it runs.
    pub fn command(&self) -> &str {
        &self.command
    }
}

impl Handler for ExecHandler {
    async fn handle(&self, call: &Call<'_>) -> Answer {
        let requests = self.requests.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            // First call: inside the pool's runtime, where the supervisor lives.
            tokio::spawn(supervise(self.command.clone(), receiver));
            sender
        });
        let number = self.next_request.fetch_add(1, Ordering::Relaxed);
        let mut body = call.body();
        body.insert("request".into(), serde_json::Value::from(number));
        let line = serde_json::Value::Object(body).to_string();
        let (reply, answer) = oneshot::channel();
        if requests
            .send(Request {
                number,
                line,
                reply,
            })
            .is_err()
        {
            return Answer::retry("exec handler: its supervisor is gone");
        }
        answer
            .await
            .unwrap_or_else(|_| Answer::retry("exec handler: the child went away unanswered"))
    }
}

/// A started child: its process, a line writer task's queue, and its stdout.
struct Running {
    child: Child,
    stdin: mpsc::UnboundedSender<String>,
    stdout: BufReader<ChildStdout>,
    started: Instant,
}

/// Unanswered requests kept across this many child restarts (sent again to each new
/// child, as the contract says); beyond it a request is answered "retry" with the reason,
/// which costs it an attempt, so an event that kills every child ends as a dead letter.
pub const RESENDS_PER_ATTEMPT_MAX: u32 = 3;

/// A request and how many children died with it unanswered.
struct Waiting {
    request: Request,
    resends: u32,
}

/// Owns the child: starts it when a request comes, writes requests, matches answers.
async fn supervise(command: String, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut supervisor = Supervisor {
        command,
        waiting: BTreeMap::new(),
        highest_sent: 0,
        restart_pause_ms: 0,
    };
    let mut running: Option<Running> = None;
    let mut line = Vec::new();
    loop {
        let Some(child) = running.as_mut() else {
            match supervisor.start_child(&mut requests).await {
                Started::Child(child) => running = Some(*child),
                Started::Failed => {}
                Started::PoolGone => return,
            }
            continue;
        };
        line.clear();
        let failure = tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { return };
                supervisor.highest_sent = supervisor.highest_sent.max(request.number);
                // A closed writer means the child is gone: its stdout says so next.
                let _ = child.stdin.send(request.line.clone());
                supervisor.waiting.insert(request.number, Waiting { request, resends: 0 });
                prune_abandoned(&mut supervisor.waiting);
                None
            }
            read = read_line(&mut child.stdout, &mut line) => match read {
                Ok(true) => answer(&line, &mut supervisor.waiting, supervisor.highest_sent).err(),
                Ok(false) => Some(exit_reason(&mut child.child).await),
                Err(error) => Some(format!("exec child's stdout: {error}")),
            },
        };
        let Some(reason) = failure else { continue };
        let child = running.take().expect("a child was running");
        supervisor.child_ended(child, &reason).await;
    }
}

/// What the supervisor keeps across children.
struct Supervisor {
    command: String,
    /// Requests sent and not answered, by number.
    waiting: BTreeMap<u64, Waiting>,
    /// The highest request number sent: an answer beyond it is the child's bug.
    highest_sent: u64,
    /// How long to wait before the next start (grows while children die young).
    restart_pause_ms: u64,
}

/// How an attempt to start a child went.
enum Started {
    /// Boxed: a running child is large, the other answers carry nothing.
    Child(Box<Running>),
    /// The command could not start; the waiting requests were answered "retry".
    Failed,
    /// The pool dropped its sender: nothing more will come.
    PoolGone,
}

impl Supervisor {
    /// Starts a child for the waiting requests (first waiting for one when none waits)
    /// and sends it what waits.
    async fn start_child(&mut self, requests: &mut mpsc::UnboundedReceiver<Request>) -> Started {
        if self.waiting.is_empty() {
            let Some(request) = requests.recv().await else {
                return Started::PoolGone;
            };
            self.highest_sent = self.highest_sent.max(request.number);
            self.waiting.insert(
                request.number,
                Waiting {
                    request,
                    resends: 0,
                },
            );
        }
        if self.restart_pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.restart_pause_ms)).await;
        }
        match start(&self.command) {
            Ok(child) => {
                // A request whose call gave up waiting is not sent to the new child.
                self.waiting.retain(|_, w| !w.request.reply.is_closed());
                for w in self.waiting.values() {
                    let _ = child.stdin.send(w.request.line.clone());
                }
                Started::Child(Box::new(child))
            }
            Err(error) => {
                let reason = format!("exec handler: cannot start `{}`: {error}", self.command);
                for (_, w) in std::mem::take(&mut self.waiting) {
                    let _ = w.request.reply.send(Answer::retry(reason.clone()));
                }
                self.restart_pause_ms = next_pause(self.restart_pause_ms);
                Started::Failed
            }
        }
    }

    /// A child failed (exited, closed its output, answered wrongly): it is ended, and
    /// the next one starts at once if this one had lived long enough, later if not.
    async fn child_ended(&mut self, child: Running, reason: &str) {
        tracing::warn!(command = %self.command, %reason, "exec handler: restarting the child");
        let healthy = child.started.elapsed() >= Duration::from_millis(HEALTHY_LIFETIME_MS);
        self.restart_pause_ms = if healthy {
            0
        } else {
            next_pause(self.restart_pause_ms)
        };
        end(child).await;
        resend_or_give_up(&mut self.waiting, reason);
    }
}

/// After a child ended: what it left unanswered goes to the next child, but a request
/// that saw too many children end is answered "retry", which costs it an attempt.
fn resend_or_give_up(waiting: &mut BTreeMap<u64, Waiting>, reason: &str) {
    let mut given_up = Vec::new();
    for (&number, w) in waiting.iter_mut() {
        w.resends += 1;
        if w.resends > RESENDS_PER_ATTEMPT_MAX {
            given_up.push(number);
        }
    }
    for number in given_up {
        let w = waiting.remove(&number).expect("listed above");
        let _ = w.request.reply.send(Answer::retry(reason));
    }
}

fn next_pause(pause_ms: u64) -> u64 {
    (pause_ms * 2).clamp(RESTART_PAUSE_MS_MIN, RESTART_PAUSE_MS_MAX)
}

fn start(command: &str) -> std::io::Result<Running> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    // Writes go through a task of their own: a child slow to read its stdin must not
    // keep the supervisor from reading its answers.
    let (lines, mut queued) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(mut line) = queued.recv().await {
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            if queued.is_empty() && stdin.flush().await.is_err() {
                return;
            }
        }
    });
    Ok(Running {
        child,
        stdin: lines,
        stdout,
        started: Instant::now(),
    })
}

async fn end(mut running: Running) {
    let _ = running.child.start_kill();
    let _ = running.child.wait().await;
}

/// Why the child's output ended: its exit status, or (a child that closed its stdout but
/// lives on) that it was stopped.
async fn exit_reason(child: &mut Child) -> String {
    match tokio::time::timeout(Duration::from_millis(EXIT_WAIT_MS), child.wait()).await {
        Ok(Ok(status)) => format!("exec child exited ({status}) with requests unanswered"),
        Ok(Err(error)) => format!("exec child ended: {error}"),
        Err(_) => {
            let _ = child.start_kill();
            "exec child closed its stdout but kept running; stopped it".into()
        }
    }
}

/// Reads one line (without its newline) into `line`, never more than the bound;
/// `Ok(false)` at end of output.
async fn read_line(
    stdout: &mut BufReader<ChildStdout>,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let bound = ANSWER_LINE_BYTES_MAX as u64 + 1;
    let read = (&mut *stdout).take(bound).read_until(b'\n', line).await?;
    if read == 0 {
        return Ok(false);
    }
    if line.len() > ANSWER_LINE_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("an answer line longer than {ANSWER_LINE_BYTES_MAX} bytes"),
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(true)
}

/// Takes one answer line; `Err` with the reason when the child broke the protocol.
fn answer(
    line: &[u8],
    waiting: &mut BTreeMap<u64, Waiting>,
    highest_sent: u64,
) -> Result<(), String> {
    let text = String::from_utf8_lossy(line);
    if text.trim().is_empty() {
        return Ok(()); // blank lines are no answer and no harm
    }
    let (number, answer) = parse_answer(&text)?;
    match waiting.remove(&number) {
        Some(w) => {
            // The call may have timed out meanwhile: then nobody listens, and that is fine.
            let _ = w.request.reply.send(answer);
            Ok(())
        }
        None if number >= 1 && number <= highest_sent => {
            // Answered before, or its call gave up waiting: late, not wrong.
            tracing::debug!(
                request = number,
                "exec handler: a late or repeated answer ignored"
            );
            Ok(())
        }
        None => Err(clip_reason(&format!(
            "exec child answered request {number}, which was never sent: {text}"
        ))),
    }
}

/// `{"request": N, "result": "applied" | "rejected" | "retry", "reason": "…"}`.
pub(super) fn parse_answer(text: &str) -> Result<(u64, Answer), String> {
    let bad = |what: &str| clip_reason(&format!("exec child printed {what}: {text}"));
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(&format!("a line that is not JSON ({e})")))?;
    let number = value
        .get("request")
        .and_then(|n| n.as_u64())
        .ok_or_else(|| bad("an answer without a numeric `request`"))?;
    let reason = value
        .get("reason")
        .and_then(|r| r.as_str())
        .unwrap_or("")
        .to_string();
    let answer = match value.get("result").and_then(|r| r.as_str()) {
        Some("applied") => Answer::Applied,
        Some("rejected") => Answer::Rejected {
            reason: if reason.is_empty() {
                "rejected without a reason".into()
            } else {
                reason
            },
        },
        Some("retry") => Answer::retry(if reason.is_empty() {
            "asked for a retry".into()
        } else {
            reason
        }),
        _ => {
            return Err(bad(
                "an answer whose `result` is not applied, rejected or retry",
            ))
        }
    };
    Ok((number, answer))
}

/// Drops requests whose caller stopped waiting (timed out), once they pile up.
fn prune_abandoned(waiting: &mut BTreeMap<u64, Waiting>) {
    if waiting.len().is_power_of_two() && waiting.len() >= 1024 {
        waiting.retain(|_, w| !w.request.reply.is_closed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_answer(r#"{"request":3,"result":"applied"}"#),
            Ok((3, Answer::Applied))
        );
        assert_eq!(
            parse_answer(r#"{"request":4,"result":"rejected","reason":"no sku"}"#),
            Ok((
                4,
                Answer::Rejected {
                    reason: "no sku".into()
                }
            ))
        );
        assert!(matches!(
            parse_answer(r#"{"request":5,"result":"retry"}"#),
            Ok((5, Answer::Retry { .. }))
        ));
        for bad in [
            "starting up...",
            r#"{"result":"applied"}"#,
            r#"{"request":"7","result":"applied"}"#,
            r#"{"request":7,"result":"done"}"#,
        ] {
            let error = parse_answer(bad).unwrap_err();
            assert!(error.starts_with("exec child printed"), "{error}");
        }
    }

    #[test]
    fn an_answer_to_a_request_never_sent_is_a_protocol_error() {
        let mut waiting = BTreeMap::new();
        let (reply, mut answered) = oneshot::channel();
        let request = Request {
            number: 2,
            line: String::new(),
            reply,
        };
        waiting.insert(
            2,
            Waiting {
                request,
                resends: 0,
            },
        );
        assert!(answer(br#"{"request":9,"result":"applied"}"#, &mut waiting, 2).is_err());
        // An already-answered (or timed-out) request is late, not wrong.
        assert!(answer(br#"{"request":1,"result":"applied"}"#, &mut waiting, 2).is_ok());
        assert!(answer(br#"{"request":2,"result":"applied"}"#, &mut waiting, 2).is_ok());
        assert_eq!(answered.try_recv(), Ok(Answer::Applied));
        assert!(waiting.is_empty());
    }
}
