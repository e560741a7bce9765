//! What the console changes, and how: each action is the CLI verb itself (`ordo dlq
//! replay`, `ordo dlq skip`, `ordo parked skip`, `ordo pause`, `ordo resume`), run as a child process of the same
//! binary, so a console action takes exactly the path a verb takes — a request the
//! running consumer carries out, or the verb's own engine when nobody runs — and is
//! recorded the same way, with its reason. Nothing here writes to the store itself.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest an action may take: the verb waits up to 30 s for a running consumer to take
/// its request up, plus the replay itself.
pub const ACTION_TIMEOUT_MS: u64 = 60_000;

/// Longest reason kept (it goes into the store's records).
pub const REASON_LEN_MAX: usize = 1_000;

/// Largest corrected body accepted.
pub const BODY_LEN_MAX: usize = 1 << 20;

/// What one entry of a selection may take beyond its turn at the rate: a running
/// consumer looks for requests every 250 ms and commits each.
pub const ENTRY_TURN_MS: u64 = 500;

/// Most dead letters one replay of a selection takes.
pub const SELECTION_MAX: usize = 1_000;

/// Fastest replay rate offered (replays per second).
pub const REPLAY_RATE_MAX: u32 = 1_000;

/// Longest a replay of a selection may take at its rate: an hour (beyond that, use the
/// CLI, which has no browser waiting on it).
pub const SELECTION_DURATION_MS_MAX: u64 = 3_600_000;

/// One operator action, as the verbs themselves take it.
pub use ordo_runtime::operator::Action as Verb;

/// What the console asks for: one verb, or a replay of several dead letters at a rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// One verb's action.
    Verb(Verb),
    /// Replay several dead letters, in entry order, at most `per_second` a second.
    ReplayMany {
        /// The entries.
        ids: Vec<u64>,
        /// The rate.
        per_second: u32,
    },
}

impl From<Verb> for Action {
    fn from(verb: Verb) -> Self {
        Action::Verb(verb)
    }
}

impl Action {
    /// What the action is, in words (the result page's heading).
    pub fn describe(&self) -> String {
        match self {
            Action::Verb(Verb::Replay { id, body: None }) => {
                format!("Replay of dead letter #{id}")
            }
            Action::Verb(Verb::Replay { id, body: Some(_) }) => {
                format!("Replay of dead letter #{id} with a corrected event")
            }
            Action::Verb(Verb::Skip { id }) => format!("Skip of dead letter #{id}"),
            Action::Verb(Verb::SkipMissing { stream, version }) => {
                format!("Pass over version {version} of `{stream}`")
            }
            Action::Verb(Verb::Pause(target)) => format!("Pause of {target}"),
            Action::Verb(Verb::Resume(target)) => format!("Resume of {target}"),
            Action::ReplayMany { ids, per_second } => {
                format!("Replay of {} dead letters at {per_second}/s", ids.len())
            }
        }
    }

    /// How long the verb may take.
    fn timeout_ms(&self) -> u64 {
        match self {
            Action::ReplayMany { ids, per_second } => {
                // Each entry waits for its turn at the rate, and (SQLite) for the running
                // consumer to take its request up.
                let per_entry_ms = (1000 / u64::from((*per_second).max(1))).max(ENTRY_TURN_MS);
                ACTION_TIMEOUT_MS + ids.len() as u64 * per_entry_ms
            }
            _ => ACTION_TIMEOUT_MS,
        }
    }
}

/// Checks a selection's size and rate before anything runs.
pub fn check_selection(ids: &[u64], per_second: u32) -> Result<(), String> {
    if ids.is_empty() {
        return Err("no dead letter is selected".into());
    }
    if ids.len() > SELECTION_MAX {
        return Err(format!(
            "{} entries selected; at most {SELECTION_MAX} at once",
            ids.len()
        ));
    }
    if per_second == 0 || per_second > REPLAY_RATE_MAX {
        return Err(format!(
            "the rate must be 1 to {REPLAY_RATE_MAX} replays per second"
        ));
    }
    if ids.len() as u64 * 1000 / u64::from(per_second) > SELECTION_DURATION_MS_MAX {
        return Err(format!(
            "{} entries at {per_second}/s take over an hour; raise the rate or use `ordo dlq replay`",
            ids.len()
        ));
    }
    Ok(())
}

/// What came of an action: whether the verb succeeded, and what it said.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Exit code 0.
    pub succeeded: bool,
    /// Its standard output and error, as it printed them.
    pub said: String,
}

/// Runs actions with the `ordo` binary on one store.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The `ordo` binary (the console's own executable).
    pub binary: PathBuf,
    /// The store URL.
    pub store: String,
}

impl Actor {
    /// Carries `action` out with `reason` (required), as the verb does.
    pub fn act(&self, action: &Action, reason: &str) -> Result<Outcome, String> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err("a reason is required: it is kept with the action".into());
        }
        if reason.len() > REASON_LEN_MAX {
            return Err(format!("the reason is longer than {REASON_LEN_MAX} bytes"));
        }
        let mut command = Command::new(&self.binary);
        let mut stdin = None;
        match action {
            Action::Verb(verb) => {
                // The verb's own words (`dlq replay`, `parked skip`, `pause`, …), then its
                // arguments as `--flag=value`: a stream key or reason starting with `-`
                // stays a value.
                command.args(verb.verb().split(' '));
                match verb {
                    Verb::Replay { id, body } => {
                        command.arg(format!("--id={id}"));
                        if let Some(body) = body {
                            if body.len() > BODY_LEN_MAX {
                                return Err(format!(
                                    "the corrected event is larger than {BODY_LEN_MAX} bytes"
                                ));
                            }
                            // On the verb's standard input: no file another user could
                            // read or swap.
                            command.arg("--body=/dev/stdin");
                            stdin = Some(body.clone());
                        }
                    }
                    Verb::Skip { id } => {
                        command.arg(format!("--id={id}"));
                    }
                    Verb::SkipMissing { stream, version } => {
                        command
                            .args([format!("--stream={stream}"), format!("--version={version}")]);
                    }
                    Verb::Pause(target) | Verb::Resume(target) => {
                        command.arg(match target {
                            ordo_store::PauseTarget::Stream(stream) => format!("--stream={stream}"),
                            ordo_store::PauseTarget::Partition(p) => format!("--partition={p}"),
                        });
                    }
                }
            }
            Action::ReplayMany { ids, per_second } => {
                check_selection(ids, *per_second)?;
                command.args(["dlq", "replay", &format!("--rate={per_second}/s")]);
                command.args(ids.iter().map(|id| format!("--id={id}")));
            }
        }
        command.args([
            format!("--store={}", self.store),
            format!("--reason={reason}"),
        ]);
        run_bounded(command, stdin, action.timeout_ms())
    }
}

/// Runs `command` to its end within `timeout_ms`, with `input` on its standard
/// input, collecting what it printed.
fn run_bounded(
    mut command: Command,
    input: Option<String>,
    timeout_ms: u64,
) -> Result<Outcome, String> {
    let mut child = command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the verb: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        std::thread::spawn(move || {
            // Dropped at the end: the verb sees the end of its input.
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the verb did not finish within {timeout_ms} ms"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    Ok(Outcome {
        succeeded: status.success(),
        said,
    })
}
