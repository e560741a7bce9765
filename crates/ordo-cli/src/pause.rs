//! `ordo pause` and `ordo resume`: an operator holds one stream, or one source partition,
//! while something outside ordo is fixed, and lets it go again. Both go through the
//! operator-action path (the running `ordo run` carries them out on SQLite; on
//! PostgreSQL the verb does, and running members rebuild), and both are recorded with
//! who, when and why.

use std::process::ExitCode;

use anyhow::bail;
use ordo_runtime::operator::Action;
use ordo_store::{ActionState, PauseTarget};

use crate::cli::PauseArgs;
use crate::dlq::Operator;

/// `ordo pause` (`pause`) or `ordo resume`.
pub fn run(args: PauseArgs, pause: bool) -> anyhow::Result<ExitCode> {
    let verb = if pause { "pause" } else { "resume" };
    if args.reason.trim().is_empty() {
        bail!("--reason must say why (it is kept with the action)");
    }
    let target = match (args.stream, args.partition) {
        (Some(stream), None) => PauseTarget::Stream(stream),
        (None, Some(partition)) => PauseTarget::Partition(partition),
        _ => bail!("give one of --stream or --partition"),
    };
    let mut operator = Operator::open(&args.store, &args.engine, &format!("ordo {verb}"))?;
    let action = if pause {
        Action::Pause(target.clone())
    } else {
        Action::Resume(target.clone())
    };
    let record = operator.act(&action, &args.reason)?;
    if record.state == ActionState::Done {
        outln!(
            "{target}: {} ({}, by {})",
            record.result,
            args.reason,
            record.user
        );
        Ok(ExitCode::SUCCESS)
    } else {
        outln!("{target}: refused ({})", record.result);
        Ok(ExitCode::from(1))
    }
}
