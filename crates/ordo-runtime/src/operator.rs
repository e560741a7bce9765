//! What an operator action does to a consumer, whoever carries it out: the verb itself
//! (on a store nobody runs, and on PostgreSQL, where running members notice and rebuild),
//! or the `ordo run` holding a SQLite store, which takes requests up at its next loop
//! turn ([`Consumer::take_requested_actions`]). Either way the action is recorded with
//! who asked, when, why and what came of it, in the commit that carries its effects.

use ordo_core::{parse_event, DeadLetter, ReplayOutcome};
use ordo_store::{ActionState, OperatorAction, PauseTarget, Store, PAUSE_VERB, RESUME_VERB};
use serde_json::json;

use crate::consumer::{now_ms, ActionError, ConsumeError, Consumer};

/// An operator action, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Put dead letter `id` back in its stream, or a corrected event in its place.
    Replay {
        /// The entry.
        id: u64,
        /// A corrected event (same stream and version, any id) to requeue instead.
        body: Option<String>,
    },
    /// Pass dead letter `id` over.
    Skip {
        /// The entry.
        id: u64,
    },
    /// Pass a missing version known lost.
    SkipMissing {
        /// The stream.
        stream: String,
        /// Its next version, which no event holds.
        version: u64,
    },
    /// Hold a stream's events, or stop reading a partition, until resumed.
    Pause(PauseTarget),
    /// Undo a pause.
    Resume(PauseTarget),
}

impl Action {
    /// The verb, as the CLI names it and the record keeps it.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Replay { .. } => "dlq replay",
            Action::Skip { .. } => "dlq skip",
            Action::SkipMissing { .. } => "parked skip",
            Action::Pause(_) => PAUSE_VERB,
            Action::Resume(_) => RESUME_VERB,
        }
    }

    /// The arguments, as the record keeps them.
    pub fn args(&self) -> serde_json::Value {
        match self {
            Action::Replay { id, body: None } | Action::Skip { id } => json!({ "id": id }),
            Action::Replay {
                id,
                body: Some(body),
            } => json!({ "id": id, "body": body }),
            Action::SkipMissing { stream, version } => {
                json!({ "stream": stream, "version": version })
            }
            Action::Pause(target) | Action::Resume(target) => target.to_args(),
        }
    }

    /// Reads a stored record back.
    pub fn from_record(record: &OperatorAction) -> Result<Action, String> {
        let args = &record.args;
        let id = || {
            args["id"]
                .as_u64()
                .ok_or_else(|| format!("`{}` without an entry id", record.verb))
        };
        match record.verb.as_str() {
            "dlq replay" => Ok(Action::Replay {
                id: id()?,
                body: args["body"].as_str().map(String::from),
            }),
            "dlq skip" => Ok(Action::Skip { id: id()? }),
            "parked skip" => Ok(Action::SkipMissing {
                stream: args["stream"]
                    .as_str()
                    .ok_or("`parked skip` without a stream")?
                    .to_string(),
                version: args["version"]
                    .as_u64()
                    .ok_or("`parked skip` without a version")?,
            }),
            verb @ (PAUSE_VERB | RESUME_VERB) => {
                let target = PauseTarget::from_args(args)
                    .ok_or_else(|| format!("`{verb}` without a stream or a partition"))?;
                Ok(if verb == PAUSE_VERB {
                    Action::Pause(target)
                } else {
                    Action::Resume(target)
                })
            }
            other => Err(format!("unknown operator verb `{other}`")),
        }
    }

    /// A new request by the current user, with `reason`.
    pub fn request(&self, reason: &str) -> OperatorAction {
        OperatorAction {
            id: 0,
            requested_ms: now_ms(),
            user: current_user(),
            verb: self.verb().into(),
            args: self.args(),
            reason: reason.into(),
            state: ActionState::Pending,
            result: String::new(),
            done_ms: None,
        }
    }
}

/// The operating-system user running this process: `USER` or `LOGNAME`, else the name
/// of the process's uid in /etc/passwd, else `uid N`.
pub fn current_user() -> String {
    if let Ok(user) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return user;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(uid) = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
    else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 2 && fields[2] == uid)
        .map_or_else(|| format!("uid {uid}"), |fields| fields[0].to_string())
}

/// `entry` with its event replaced by `body`, which must name the same stream and version.
fn corrected(entry: &DeadLetter, body: &str, id: u64) -> Result<DeadLetter, String> {
    let event = parse_event(body.trim().as_bytes(), ordo_core::OpPolicy::Custom)
        .map_err(|e| format!("the corrected event is not valid: {e}"))?;
    if entry.stream.as_deref() != Some(&*event.stream) || entry.version != Some(event.version) {
        return Err(format!(
            "the corrected event is `{}` version {}; dead letter {id} holds `{}` version {}",
            event.stream,
            event.version,
            entry.stream.as_deref().unwrap_or("-"),
            entry.version.map_or("-".into(), |v| v.to_string())
        ));
    }
    let mut entry = entry.clone();
    entry.body = body.trim().to_string();
    entry.event_id = Some(event.id.clone());
    Ok(entry)
}

impl<S: Store> Consumer<S> {
    /// Carries `action` out (applying what it unblocks) and returns its record, `Done`
    /// with what it did or `Refused` with why. Commit afterwards: the record goes with
    /// the effects.
    pub fn perform(
        &mut self,
        action: &Action,
        mut record: OperatorAction,
    ) -> Result<OperatorAction, ConsumeError> {
        let result = self.carry_out(action)?;
        record.state = if result.is_ok() {
            ActionState::Done
        } else {
            ActionState::Refused
        };
        record.result = result.unwrap_or_else(|refusal| refusal);
        record.done_ms = Some(now_ms());
        tracing::info!(
            verb = %record.verb,
            args = %record.args,
            user = %record.user,
            reason = %record.reason,
            result = %record.result,
            "operator action"
        );
        self.record_action(record.clone());
        Ok(record)
    }

    fn carry_out(&mut self, action: &Action) -> Result<Result<String, String>, ConsumeError> {
        let entry =
            |consumer: &mut Self, id: u64| -> Result<Result<DeadLetter, String>, ConsumeError> {
                let entries = consumer.store().dead_letters()?;
                Ok(entries
                    .into_iter()
                    .find(|e| e.id == id)
                    .ok_or_else(|| format!("no dead letter with id {id}")))
            };
        Ok(match action {
            Action::Replay { id, body } => {
                let found = match entry(self, *id)? {
                    Ok(found) => found,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                let found = match body {
                    Some(body) => match corrected(&found, body, *id) {
                        Ok(found) => found,
                        Err(refusal) => return Ok(Err(refusal)),
                    },
                    None => found,
                };
                refused_or_failed(self.replay(&found).map(|outcome| {
                    match outcome {
                        ReplayOutcome::Requeued => "requeued",
                        ReplayOutcome::AlreadyApplied => "already-applied",
                        ReplayOutcome::DeadLetteredAgain => "dead-lettered-again",
                    }
                    .to_string()
                }))?
            }
            Action::Skip { id } => match entry(self, *id)? {
                Ok(found) => refused_or_failed(self.skip(&found).map(|()| "skipped".to_string()))?,
                Err(refusal) => Err(refusal),
            },
            Action::SkipMissing { stream, version } => refused_or_failed(
                self.skip_missing(stream, *version)
                    .map(|()| "skipped".to_string()),
            )?,
            Action::Pause(target) => self.set_paused(target, true),
            Action::Resume(target) => self.set_paused(target, false),
        })
    }

    /// Pauses or resumes `target`: `paused` / `resumed`, or why nothing changed.
    fn set_paused(&mut self, target: &PauseTarget, paused: bool) -> Result<String, String> {
        let changed = match target {
            PauseTarget::Stream(stream) if paused => self.engine.pause(stream),
            PauseTarget::Stream(stream) => self.engine.resume(stream),
            PauseTarget::Partition(partition) => self.set_partition_paused(*partition, paused),
        };
        match (changed, paused) {
            (true, true) => Ok("paused".into()),
            (true, false) => Ok("resumed".into()),
            (false, true) => Err(format!("{target} is paused already")),
            (false, false) => Err(format!("{target} is not paused")),
        }
    }

    /// Carries out the actions operator verbs left for this consumer (a SQLite store it
    /// holds); how many. Commit afterwards.
    pub fn take_requested_actions(&mut self) -> Result<usize, ConsumeError> {
        let requests = self.store().requested_actions()?;
        for request in &requests {
            match Action::from_record(request) {
                Ok(action) => {
                    self.perform(&action, request.clone())?;
                }
                Err(refusal) => {
                    let mut record = request.clone();
                    record.state = ActionState::Refused;
                    record.result = refusal;
                    record.done_ms = Some(now_ms());
                    self.record_action(record);
                }
            }
        }
        Ok(requests.len())
    }
}

/// An action's answer: what it did, or why the engine refused it (told to the operator);
/// a failure to apply what it unblocked is the consumer's own error.
fn refused_or_failed(
    done: Result<String, ActionError>,
) -> Result<Result<String, String>, ConsumeError> {
    match done {
        Ok(what) => Ok(Ok(what)),
        Err(ActionError::Refused(refused)) => Ok(Err(refused.to_string())),
        Err(ActionError::Consume(error)) => Err(error),
    }
}
