//! Who is in a group of consumers when the broker keeps no group (NATS JetStream): each
//! member keeps a row of the `members` table alive (its heartbeat, in the server's
//! clock), and the `claims` table says who holds which partition. What a member makes of
//! that view (which partitions it reads) is `ordo_runtime::membership`'s decision; this
//! module only reads and writes the rows.
//!
//! Every member says how many partitions it reads the source as: members that disagree
//! would each read a different split of the same messages, so a beat that finds another
//! live member with another count fails ([`MembersError::PartitionsDiffer`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use postgres::Client;

use crate::error::postgres_detail;
use crate::pg::connect;
use crate::url::redact;

/// What one beat saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupView {
    /// The members whose heartbeat is younger than the session timeout, this one
    /// included, sorted.
    pub live: Vec<String>,
    /// Who holds each claimed partition (`""`: released by its last holder).
    pub holders: BTreeMap<u32, String>,
}

/// Why a beat failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum MembersError {
    /// The PostgreSQL server cannot be reached.
    Connect {
        /// The URL, with its password redacted.
        url: String,
        /// What the client said.
        source: postgres::Error,
    },
    /// PostgreSQL failed.
    Postgres(postgres::Error),
    /// Another live member reads the source as another number of partitions.
    PartitionsDiffer {
        /// That member.
        member: String,
        /// Its count.
        theirs: u32,
        /// This member's.
        mine: u32,
    },
}

impl fmt::Display for MembersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembersError::Connect { url, source } => write!(
                f,
                "group membership: cannot connect to {url}: {}",
                postgres_detail(source)
            ),
            MembersError::Postgres(error) => {
                write!(f, "group membership: {}", postgres_detail(error))
            }
            MembersError::PartitionsDiffer {
                member,
                theirs,
                mine,
            } => write!(
                f,
                "member `{member}` reads this source as {theirs} partitions, this one as {mine}: give every member the same partitions="
            ),
        }
    }
}

impl std::error::Error for MembersError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MembersError::Connect { source, .. } | MembersError::Postgres(source) => Some(source),
            MembersError::PartitionsDiffer { .. } => None,
        }
    }
}

impl From<postgres::Error> for MembersError {
    fn from(error: postgres::Error) -> Self {
        MembersError::Postgres(error)
    }
}

/// One member's rows in a PostgreSQL store: its heartbeat, and the group's view.
pub struct PgMembers {
    /// Dropped after a failure; the next beat connects again.
    client: Option<Client>,
    url: String,
    schema: Option<String>,
    source: String,
    member: String,
    partitions: u32,
    /// How long a silent member still counts as live, in the form the queries take.
    session_timeout_ms: i64,
}

impl PgMembers {
    /// A member `member` of the group reading `source` as `partitions` partitions, on
    /// the store at `url` (`schema` as the store's). Connects at the first beat.
    pub(crate) fn new(
        url: String,
        schema: Option<String>,
        source: &str,
        member: &str,
        partitions: u32,
        session_timeout: Duration,
    ) -> Self {
        assert!(partitions > 0, "a source has at least one partition");
        PgMembers {
            client: None,
            url,
            schema,
            source: source.to_string(),
            member: member.to_string(),
            partitions,
            session_timeout_ms: i64::try_from(session_timeout.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// This member's name (as in `claims`).
    pub fn member(&self) -> &str {
        &self.member
    }

    fn client(&mut self) -> Result<&mut Client, MembersError> {
        if self.client.is_none() {
            let client = connect(&self.url, self.schema.as_deref(), false).map_err(|e| {
                MembersError::Connect {
                    url: redact(&self.url),
                    source: e,
                }
            })?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Says this member is alive, and reads who else is and who holds what.
    pub fn beat(&mut self) -> Result<GroupView, MembersError> {
        self.reconnecting_after(Self::beat_once)
    }

    /// Runs `operation`; after a failure the connection is dropped, so that the next
    /// call connects again.
    fn reconnecting_after<T>(
        &mut self,
        operation: impl FnOnce(&mut Self) -> Result<T, MembersError>,
    ) -> Result<T, MembersError> {
        let done = operation(self);
        if done.is_err() {
            self.client = None;
        }
        done
    }

    fn beat_once(&mut self) -> Result<GroupView, MembersError> {
        let source = self.source.clone();
        let member = self.member.clone();
        let partitions = i64::from(self.partitions);
        let timeout_ms = self.session_timeout_ms;
        let mine = self.partitions;
        let client = self.client()?;
        client.execute(
            "INSERT INTO members (source, member, partitions, seen_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (source, member) DO UPDATE SET partitions = excluded.partitions, seen_at = now()",
            &[&source, &member, &partitions],
        )?;
        let mut view = GroupView::default();
        for row in client.query(
            "SELECT member, partitions FROM members
             WHERE source = $1 AND seen_at > now() - $2::BIGINT * interval '1 millisecond'
             ORDER BY member",
            &[&source, &timeout_ms],
        )? {
            let (name, theirs): (String, i64) = (row.get(0), row.get(1));
            if theirs != partitions {
                return Err(MembersError::PartitionsDiffer {
                    member: name,
                    theirs: u32::try_from(theirs).unwrap_or(u32::MAX),
                    mine,
                });
            }
            view.live.push(name);
        }
        for row in client.query(
            "SELECT partition, member FROM claims WHERE source = $1",
            &[&source],
        )? {
            let partition: i64 = row.get(0);
            if let Ok(partition) = u32::try_from(partition) {
                view.holders.insert(partition, row.get(1));
            }
        }
        Ok(view)
    }

    /// Claims those of `partitions` nobody else holds (unclaimed, released, or held by a
    /// member that is no longer live), in one statement each, so that two members never
    /// both take one: the partitions now held by this member.
    pub fn reserve(&mut self, partitions: &[u32]) -> Result<Vec<u32>, MembersError> {
        self.reconnecting_after(|members| members.reserve_once(partitions))
    }

    fn reserve_once(&mut self, partitions: &[u32]) -> Result<Vec<u32>, MembersError> {
        let source = self.source.clone();
        let member = self.member.clone();
        let timeout_ms = self.session_timeout_ms;
        let client = self.client()?;
        let mut reserved = Vec::new();
        // In partition order, as commits lock their claims: fewer deadlocks to break.
        for &partition in partitions {
            let taken = client.query_opt(
                "INSERT INTO claims (source, partition, member, epoch) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (source, partition) DO UPDATE
                 SET member = excluded.member, epoch = claims.epoch + 1
                 WHERE claims.member = '' OR claims.member = excluded.member
                    OR claims.member NOT IN (SELECT member FROM members WHERE source = $1
                        AND seen_at > now() - $4::BIGINT * interval '1 millisecond')
                 RETURNING partition",
                &[&source, &i64::from(partition), &member, &timeout_ms],
            )?;
            if taken.is_some() {
                reserved.push(partition);
            }
        }
        Ok(reserved)
    }

    /// Takes this member out of the group at once (a clean stop): the others need not
    /// wait for its heartbeat to age.
    pub fn leave(&mut self) -> Result<(), MembersError> {
        let source = self.source.clone();
        let member = self.member.clone();
        self.client()?.execute(
            "DELETE FROM members WHERE source = $1 AND member = $2",
            &[&source, &member],
        )?;
        Ok(())
    }
}
