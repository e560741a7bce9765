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
