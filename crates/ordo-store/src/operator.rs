//! Operator actions as rows: the record of every action (who, when, why, what came of
//! it), and the requests an operator verb leaves for the `ordo run` that holds a SQLite
//! store, which takes them up at its next loop turn and records the outcome in its own
//! commit.

/// Where an operator action stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionState {
    /// Requested; the running consumer has not taken it up yet.
    Pending,
    /// Carried out (`result` says what it did).
    Done,
    /// Refused (`result` says why); nothing changed.
    Refused,
}

impl ActionState {
    /// The state's name as stores write it.
    pub fn name(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Done => "done",
            ActionState::Refused => "refused",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "pending" => ActionState::Pending,
            "done" => ActionState::Done,
            "refused" => ActionState::Refused,
            _ => return None,
        })
    }
}

/// One operator action: a request, or the record of one carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorAction {
    /// The row's id; 0 for a record not yet written (the store assigns it).
    pub id: u64,
    /// When it was asked for (ms since the epoch).
    pub requested_ms: u64,
    /// Who asked (the operating-system user of the verb).
    pub user: String,
    /// The verb: `dlq replay`, `dlq skip`, `parked skip`.
    pub verb: String,
    /// The verb's arguments, as JSON (`{"id":N}`, `{"id":N,"body":"…"}`,
    /// `{"stream":S,"version":N}`).
    pub args: serde_json::Value,
    /// Why, in the operator's words (may be empty where the verb does not require one).
    pub reason: String,
    /// Where it stands.
    pub state: ActionState,
    /// What it did (`requeued`, `already-applied`, `dead-lettered-again`, `skipped`) or
    /// why it was refused.
    pub result: String,
    /// When it was carried out or refused.
    pub done_ms: Option<u64>,
}

/// The columns every action query selects, in [`action_from_row`]'s order.
pub(crate) const ACTION_COLUMNS: &str =
    "id, requested_ms, user_name, verb, args, reason, state, result, done_ms";

/// One stored row back into an action.
#[allow(clippy::too_many_arguments)]
pub(crate) fn action_from_row(
    id: i64,
    requested_ms: i64,
    user: String,
    verb: String,
    args: String,
    reason: String,
    state: String,
    result: String,
    done_ms: Option<i64>,
) -> Result<OperatorAction, crate::ReadError> {
    let corrupt = |what: &str| crate::ReadError::Corrupt(format!("operator action {id}: {what}"));
    Ok(OperatorAction {
        id: id as u64,
        requested_ms: requested_ms as u64,
        user,
        verb,
        args: serde_json::from_str(&args).map_err(|_| corrupt("args are not JSON"))?,
        reason,
        state: ActionState::from_name(&state).ok_or_else(|| corrupt("unknown state"))?,
        result,
        done_ms: done_ms.map(|ms| ms as u64),
    })
}

/// The verb that pauses a stream or a partition.
pub const PAUSE_VERB: &str = "pause";
/// The verb that resumes one.
pub const RESUME_VERB: &str = "resume";

/// What an operator paused.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PauseTarget {
    /// One stream: none of its events is applied; they wait, durable, until it resumes.
    Stream(String),
    /// One source partition: nothing more is read from it until it resumes.
    Partition(u32),
}

impl PauseTarget {
    /// The target as a pause action's arguments keep it.
    pub fn to_args(&self) -> serde_json::Value {
        match self {
            PauseTarget::Stream(stream) => serde_json::json!({ "stream": stream }),
            PauseTarget::Partition(partition) => serde_json::json!({ "partition": partition }),
        }
    }

    /// Reads [`Self::to_args`] back.
    pub fn from_args(args: &serde_json::Value) -> Option<Self> {
        if let Some(stream) = args["stream"].as_str() {
            return Some(PauseTarget::Stream(stream.to_string()));
        }
        let partition = u32::try_from(args["partition"].as_u64()?).ok()?;
        Some(PauseTarget::Partition(partition))
    }
}

impl std::fmt::Display for PauseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PauseTarget::Stream(stream) => write!(f, "stream `{stream}`"),
            PauseTarget::Partition(partition) => write!(f, "partition {partition}"),
        }
    }
}

/// A pause in force: the action that made it, which nothing resumed since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    /// What is paused.
    pub target: PauseTarget,
    /// Who paused it.
    pub user: String,
    /// Why, in their words.
    pub reason: String,
    /// Since when (ms since the epoch).
    pub since_ms: u64,
}

/// The pauses in force after `actions` (every carried-out pause and resume, oldest
/// first): the operator-action record is where pauses live, so that a restart, a
/// rebalance and another member of a group all read the same ones.
pub fn pauses_in_force(actions: &[OperatorAction]) -> Vec<Pause> {
    let mut in_force = std::collections::BTreeMap::new();
    for action in actions.iter().filter(|a| a.state == ActionState::Done) {
        let Some(target) = PauseTarget::from_args(&action.args) else {
            continue;
        };
        match action.verb.as_str() {
            PAUSE_VERB => {
                let pause = Pause {
                    target: target.clone(),
                    user: action.user.clone(),
                    reason: action.reason.clone(),
                    since_ms: action.done_ms.unwrap_or(action.requested_ms),
                };
                in_force.insert(target, pause);
            }
            RESUME_VERB => {
                in_force.remove(&target);
            }
            _ => {}
        }
    }
    in_force.into_values().collect()
}

/// The query that reads what [`pauses_in_force`] folds.
pub(crate) fn pause_actions_sql() -> String {
    format!(
        "SELECT {ACTION_COLUMNS} FROM operator_actions
         WHERE verb IN ('{PAUSE_VERB}', '{RESUME_VERB}') AND state = 'done' ORDER BY id"
    )
}
