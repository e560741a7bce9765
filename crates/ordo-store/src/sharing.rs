//! The checks a store shared by several processes makes inside every commit, written
//! once: the PostgreSQL store runs them on rows it locked, the in-memory shared store
//! ([`crate::SharedMemoryStore`], the simulator's stand-in) on its maps. A simulation of
//! several members then exercises the very rules production runs.

use ordo_core::{Counters, StreamRecord};

use crate::ConflictReason;

/// The group's counters after a commit: what is stored plus what this process counted
/// since it last read or wrote them (`now - base`), so members add up instead of
/// overwriting each other.
pub fn counters_added(stored: Counters, base: Counters, now: Counters) -> Counters {
    Counters::from_fields(
        now.fields()
            .iter()
            .zip(base.fields())
            .zip(stored.fields())
            .map(|(((name, now), (_, before)), (_, total))| {
                (*name, total.saturating_add(now.saturating_sub(before)))
            }),
    )
}

/// Refuses a batch whose stream positions another member got to first.
///
/// `stored` answers, for a stream, its committed (applied version, whether it is an
/// alias), or `None` when no row exists. A batch is refused when it writes a stream that
/// was merged away elsewhere without merging it itself (this member redirected into a
/// stream it thought live), or brings a stream to a version at or below the stored one
/// without newly merging it (another member already applied that version: applying it
/// here too would apply it twice).
pub fn check_stream_positions(
    records: &[StreamRecord],
    stored: impl Fn(&str) -> Option<(u64, bool)>,
) -> Result<(), ConflictReason> {
    for record in records {
        let Some((applied, aliased)) = stored(&record.stream) else {
            continue;
        };
        if aliased && record.alias.is_none() {
            return Err(ConflictReason::StreamMergedAway {
                stream: record.stream.to_string(),
            });
        }
        let new_alias = record.alias.is_some() && !aliased;
        if !new_alias && applied >= record.applied {
            return Err(ConflictReason::AlreadyApplied {
                stream: record.stream.to_string(),
                stored: applied,
                batch: record.applied,
            });
        }
    }
    Ok(())
}

/// Refuses a batch that writes the document of a stream merged away by another member
/// (not by this batch): the alias chain grew elsewhere (`a → b` here, `b → c` there) and
/// this member redirected into the cleared document of `b`. Returns the conflict for the
/// first such stream; `stored_alias` answers a stream's committed merge target.
pub fn check_documents_live<'a>(
    written: impl IntoIterator<Item = &'a str>,
    records: &[StreamRecord],
    stored_alias: impl Fn(&str) -> Option<String>,
) -> Result<(), ConflictReason> {
    let mut dead: Vec<(&str, String)> = written
        .into_iter()
        .filter(|stream| {
            !records
                .iter()
                .any(|r| r.alias.is_some() && &*r.stream == *stream)
        })
        .filter_map(|stream| stored_alias(stream).map(|target| (stream, target)))
        .collect();
    dead.sort();
    match dead.into_iter().next() {
        Some((document, target)) => Err(ConflictReason::DocumentMergedAway {
            document: document.to_string(),
            target,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(stream: &str, applied: u64, alias: Option<&str>) -> StreamRecord {
        StreamRecord {
            stream: Arc::from(stream),
            applied,
            alias: alias.map(|t| (Arc::from(t), applied)),
        }
    }

    #[test]
    fn a_version_applied_elsewhere_is_refused_and_a_newer_one_passes() {
        let stored = |s: &str| (s == "a").then_some((3, false));
        assert!(check_stream_positions(&[record("a", 3, None)], stored).is_err());
        assert!(check_stream_positions(&[record("a", 4, None)], stored).is_ok());
        assert!(check_stream_positions(&[record("b", 1, None)], stored).is_ok());
        // Merging a stream that another member moved on is allowed: the position is
        // kept (GREATEST) and the alias added.
        assert!(check_stream_positions(&[record("a", 2, Some("t"))], stored).is_ok());
    }

    #[test]
    fn a_stream_merged_away_elsewhere_is_refused() {
        let stored = |_: &str| Some((3, true));
        let refused = check_stream_positions(&[record("a", 4, None)], stored).unwrap_err();
        assert!(
            matches!(&refused, ConflictReason::StreamMergedAway { stream } if stream == "a"),
            "{refused}"
        );
        assert!(check_documents_live(["a"], &[], |_| Some("t".into())).is_err());
        // ... unless this very batch merged it.
        assert!(
            check_documents_live(["a"], &[record("a", 3, Some("t"))], |_| Some("t".into())).is_ok()
        );
    }
}
