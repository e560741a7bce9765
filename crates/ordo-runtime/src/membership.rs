//! Which partitions this process reads when the broker keeps no consumer group (NATS
//! JetStream 2.9 has none): the members of a group share a PostgreSQL store, each keeps
//! a heartbeat row there ([`ordo_store::members`]), and every member derives the same
//! split from the same view.
//!
//! - **The split.** Partition `p` belongs to the `(p mod k)`-th of the `k` live members,
//!   sorted by name ([`assigned`]). A member is live while its heartbeat is younger than
//!   [`SESSION_TIMEOUT_MS`], in the database server's clock.
//! - **Hand-over.** A member gives a partition up as soon as its view says so (the run
//!   loop commits, then marks the claim released), and takes one only once nobody else
//!   holds it: unclaimed, released, held by a member that is no longer live, or held
//!   under its own name (a restart with `--member-id`) ([`takeable`]). Taking is one
//!   conditional statement on the claim's row ([`PgMembers::reserve`]), so two members
//!   with different views never both take a partition. Two members read one partition
//!   at once only when one of them stalled past the session timeout: the claims' epochs
//!   fence the stalled one's commits, and it gives the partition up as soon as its view
//!   shows the new holder (or, with no fresh view, gives everything up).
//! - **A stalled loop leaves.** The heartbeat runs on its own thread, but only while the
//!   run loop polls at least every [`LOOP_SILENCE_MS_MAX`]: a process stuck longer lets
//!   the others take over, as a Kafka member does after `max.poll.interval.ms`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ordo_store::members::{GroupView, MembersError, PgMembers};

/// How often a member says it is alive and reads the group's view.
pub const HEARTBEAT_MS: u64 = 1_000;

/// How long a member that stopped beating still counts as live: its partitions wait this
/// long for it (a crash), then go to the others.
pub const SESSION_TIMEOUT_MS: u64 = 6_000;
const _: () = assert!(HEARTBEAT_MS * 3 <= SESSION_TIMEOUT_MS);

/// Longest the run loop may go without polling before this member stops beating.
pub const LOOP_SILENCE_MS_MAX: u64 = 300_000;
const _: () = assert!(LOOP_SILENCE_MS_MAX > SESSION_TIMEOUT_MS);

/// How often the heartbeat thread looks whether it should stop.
const STOP_CHECK_MS: u64 = 50;

/// The partitions `me` reads when `live` (sorted) are the group's members: every
/// partition `p` goes to `live[p mod k]`. None when `me` is not among them.
#[must_use]
pub fn assigned(partitions: u32, live: &[String], me: &str) -> BTreeSet<u32> {
    let Some(index) = live.iter().position(|m| m == me) else {
        return BTreeSet::new();
    };
    let count = live.len() as u32;
    (0..partitions)
        .filter(|p| p % count == index as u32)
        .collect()
}

/// Whether `me` may start reading `partition`: nobody else holds it.
#[must_use]
pub fn takeable(partition: u32, view: &GroupView, me: &str) -> bool {
    match view.holders.get(&partition) {
        None => true,
        Some(holder) => holder.is_empty() || holder == me || !view.live.contains(holder),
    }
}

/// A change of the partitions this process reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Stop reading these (commit, release, then go on with the rest).
    Revoke(Vec<u32>),
    /// Read these from now on: every partition owned afterwards, kept ones included.
    Assign(Vec<u32>),
}

impl Change {
    /// How a source announces the change to the run loop.
    pub fn announced(&self) -> crate::Polled {
        match self {
            Change::Revoke(partitions) => crate::Polled::Revoked(partitions.clone()),
            Change::Assign(partitions) => crate::Polled::Assigned(partitions.clone()),
        }
    }
}

/// What to do about the partitions `owned`, given the wanted `target` and those the
/// store says this member holds (`mine`: owned ones, and ones taken for it since):
/// revocations first, so that a partition moving between two members is let go of before
/// the other may take it. A partition held but no longer wanted is revoked even when it
/// was never read here (its claim is released); one read here that the store says
/// another member holds now (this one stalled past the session timeout) is revoked at
/// once, before anything of it is read again.
#[must_use]
pub fn change(
    owned: &BTreeSet<u32>,
    target: &BTreeSet<u32>,
    mine: &BTreeSet<u32>,
) -> Option<Change> {
    let lost: Vec<u32> = owned
        .union(mine)
        .filter(|partition| !target.contains(partition) || !mine.contains(partition))
        .copied()
        .collect();
    if !lost.is_empty() {
        return Some(Change::Revoke(lost));
    }
    let gained = target
        .intersection(mine)
        .any(|partition| !owned.contains(partition));
    gained.then(|| {
        Change::Assign(
            owned
                .iter()
                .chain(target.intersection(mine))
                .copied()
                .collect::<BTreeSet<u32>>()
                .into_iter()
                .collect(),
        )
    })
}

/// What the heartbeat thread last learnt.
struct Shared {
    target: BTreeSet<u32>,
    /// The partitions the store says this member holds.
    mine: BTreeSet<u32>,
    /// The last beat that reached the database.
    beat_at: Option<Instant>,
    /// A failure that no further beat can mend (members disagreeing on the partitions).
    fatal: Option<MembersError>,
    /// When the run loop last asked ([`Member::change`]).
    polled_at: Instant,
    /// Counts the revocations handed out: a beat that started before one may have read
    /// the claims before the release, and its `mine` is dropped.
    generation: u64,
}

/// This process's membership: a heartbeat thread and what it learnt.
pub struct Member {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    /// Starts beating for `members`, a group reading the source as `partitions`
    /// partitions.
    pub fn start(members: PgMembers, partitions: u32) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            target: BTreeSet::new(),
            mine: BTreeSet::new(),
            beat_at: None,
            fatal: None,
            polled_at: Instant::now(),
            generation: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("ordo-membership".into())
                .spawn(move || beat_until_stopped(members, partitions, &shared, &stop))
                .expect("a thread for the heartbeat")
        };
        Member {
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// What to change about the partitions `owned` now. A member whose last beat is
    /// older than the session timeout wants nothing: the others may already hold its
    /// partitions.
    pub fn change(&self, owned: &BTreeSet<u32>) -> Result<Option<Change>, MembersError> {
        let mut shared = self.shared.lock().expect("membership");
        shared.polled_at = Instant::now();
        if let Some(fatal) = shared.fatal.take() {
            return Err(fatal);
        }
        let fresh = shared
            .beat_at
            .is_some_and(|at| at.elapsed() < Duration::from_millis(SESSION_TIMEOUT_MS));
        let change = if fresh {
            change(owned, &shared.target, &shared.mine)
        } else {
            change(owned, &BTreeSet::new(), &BTreeSet::new())
        };
        if let Some(Change::Revoke(lost)) = &change {
            // Released by the run loop before it asks again; the next beat reads so.
            for partition in lost {
                shared.mine.remove(partition);
            }
            shared.generation += 1;
        }
        Ok(change)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn beat_until_stopped(
    mut members: PgMembers,
    partitions: u32,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) {
    let mut failing = false;
    let mut last_view = GroupView::default();
    while !stop.load(Ordering::SeqCst) {
        let (polled_at, generation) = {
            let shared = shared.lock().expect("membership");
            (shared.polled_at, shared.generation)
        };
        if polled_at.elapsed() < Duration::from_millis(LOOP_SILENCE_MS_MAX) {
            // Before the beat: the others count this member live from its start.
            let beaten_at = Instant::now();
            match beat(&mut members, partitions) {
                Ok((view, target, mine)) => {
                    failing = false;
                    if view.live != last_view.live {
                        tracing::info!(live = ?view.live, reads = ?target, "membership: the group changed");
                    }
                    last_view = view;
                    let mut shared = shared.lock().expect("membership");
                    shared.target = target;
                    if shared.generation == generation {
                        shared.mine = mine;
                    }
                    shared.beat_at = Some(beaten_at);
                }
                Err(error @ MembersError::PartitionsDiffer { .. }) => {
                    shared.lock().expect("membership").fatal = Some(error);
                    return;
                }
                Err(error) => {
                    // Said once per run of failures; the partitions go after the session
                    // timeout if the database stays away.
                    if !failing {
                        tracing::warn!(%error, "membership: heartbeat failed");
                    }
                    failing = true;
                }
            }
        }
        let mut slept = 0;
        while slept < HEARTBEAT_MS && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(STOP_CHECK_MS));
            slept += STOP_CHECK_MS;
        }
    }
    if let Err(error) = members.leave() {
        tracing::warn!(%error, "membership: cannot leave the group (the others wait for the session timeout)");
    }
}

/// One heartbeat: the view, the partitions this member should read, and those it holds
/// (taking what it should read and nobody else holds).
fn beat(
    members: &mut PgMembers,
    partitions: u32,
) -> Result<(GroupView, BTreeSet<u32>, BTreeSet<u32>), MembersError> {
    let view = members.beat()?;
    let me = members.member().to_string();
    let target = assigned(partitions, &view.live, &me);
    let mut mine: BTreeSet<u32> = view
        .holders
        .iter()
        .filter(|(_, holder)| **holder == me)
        .map(|(partition, _)| *partition)
        .collect();
    let free: Vec<u32> = target
        .iter()
        .filter(|&&p| !mine.contains(&p) && takeable(p, &view, &me))
        .copied()
        .collect();
    if !free.is_empty() {
        mine.extend(members.reserve(&free)?);
    }
    Ok((view, target, mine))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn set(partitions: &[u32]) -> BTreeSet<u32> {
        partitions.iter().copied().collect()
    }

    #[test]
    fn every_partition_goes_to_exactly_one_live_member() {
        let live = names(&["a", "b", "c"]);
        let mut all = BTreeSet::new();
        for member in &live {
            let mine = assigned(8, &live, member);
            assert!(mine.is_disjoint(&all), "{member} shares a partition");
            all.extend(mine);
        }
        assert_eq!(all, (0..8).collect());
        assert!(assigned(8, &live, "d").is_empty());
        assert_eq!(assigned(2, &live, "c"), set(&[]));
    }

    #[test]
    fn a_partition_is_taken_only_from_nobody() {
        let mut view = GroupView {
            live: names(&["a", "b"]),
            ..GroupView::default()
        };
        view.holders.insert(0, "a".into());
        view.holders.insert(1, String::new());
        view.holders.insert(2, "gone".into());
        assert!(!takeable(0, &view, "b"), "held by a live member");
        assert!(
            takeable(0, &view, "a"),
            "its own (a restart under its name)"
        );
        assert!(takeable(1, &view, "b"), "released");
        assert!(takeable(2, &view, "b"), "its holder is not live");
        assert!(takeable(3, &view, "b"), "never claimed");
    }

    #[test]
    fn revocations_come_before_assignments() {
        let owned = set(&[0, 1]);
        assert_eq!(
            change(&owned, &set(&[1, 2]), &set(&[0, 1, 2])),
            Some(Change::Revoke(vec![0]))
        );
        let owned = set(&[1]);
        assert_eq!(
            change(&owned, &set(&[1, 2]), &set(&[1, 2])),
            Some(Change::Assign(vec![1, 2]))
        );
        // Wanted but still held elsewhere: wait.
        assert_eq!(change(&owned, &set(&[1, 2]), &set(&[1])), None);
        assert_eq!(change(&owned, &set(&[1]), &set(&[1])), None);
        // Taken for this member but no longer wanted: released, though never read.
        assert_eq!(
            change(&owned, &set(&[1]), &set(&[1, 3])),
            Some(Change::Revoke(vec![3]))
        );
        // Read here, but the store says another member holds it now: give it up.
        assert_eq!(
            change(&set(&[1, 2]), &set(&[1, 2]), &set(&[1])),
            Some(Change::Revoke(vec![2]))
        );
        // No fresh view: give everything up.
        assert_eq!(
            change(&owned, &BTreeSet::new(), &BTreeSet::new()),
            Some(Change::Revoke(vec![1]))
        );
    }
}
