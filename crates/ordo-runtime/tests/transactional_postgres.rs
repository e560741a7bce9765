//! A transactional handler on the PostgreSQL store: the team's table changes in the very
//! transaction that records ordo's versions and positions. Runs that stop abruptly
//! (nothing committed after their last commit; the connection closes and PostgreSQL rolls
//! the open batch back) leave the team's rows and ordo's versions equal for every stream.
//!
//! Needs PostgreSQL at 127.0.0.1:5432 (trust auth, database `test`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use ordo_core::{Config, OpPolicy};
use ordo_runtime::handler::{Call, Refusal, TransactionalHandler};
use ordo_runtime::{
    Consumer, CrashAfter, Polled, RunEnd, RunError, RunOptions, Source, SourceError, SourceUrl,
};
use ordo_store::postgres::{Client, NoTls};
use ordo_store::PostgresStore;

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One row per applied deposit; a negative amount is refused.
struct Ledger;

impl TransactionalHandler<Client> for Ledger {
    fn handle(&mut self, db: &mut Client, call: &Call<'_>) -> Result<(), Refusal> {
        let event = call.event();
        let amount = event.data["amount"].as_i64().unwrap_or(0);
        if amount < 0 {
            return Err(Refusal::rejected(format!("a deposit of {amount}")));
        }
        db.execute(
            "INSERT INTO team_ledger (stream, version, amount) VALUES ($1, $2, $3)",
            &[&&*event.stream, &(event.version as i64), &amount],
        )?;
        Ok(())
    }
}

/// 30 accounts × 40 deposits, each account's versions swapped in pairs (3, 2, 5, 4, …)
/// and the accounts interleaved; `account-7` version 9 is refused.
fn events() -> String {
    let mut lines = Vec::new();
    for round in 0..20u64 {
        for account in 0..30 {
            for version in [round * 2 + 2, round * 2 + 1] {
                let amount = if account == 7 && version == 9 { -5 } else { 10 };
                lines.push(format!(
                    r#"{{"id":"a{account}-{version}","stream":"account-{account}","version":{version},"type":"Deposited","op":"deposit","data":{{"amount":{amount}}}}}"#
                ));
            }
        }
    }
    lines.join("\n") + "\n"
}

/// A file source that hands out a few events per poll, so that several polls' works are
/// applied (and written into the open batch) before a commit is due.
struct Trickle(Box<dyn Source>);

impl Source for Trickle {
    fn resume(&mut self, checkpoints: &[(u32, u64)]) {
        self.0.resume(checkpoints);
    }

    fn poll(&mut self, max: usize, wait: std::time::Duration) -> Result<Polled, SourceError> {
        self.0.poll(max.min(7), wait)
    }
}

/// Runs until idle, or (with `crash_after`) until the crash strikes after that many
/// deliveries.
fn run(url: &SourceUrl, store_url: &str, crash_after: Option<u64>) {
    let store = PostgresStore::open(store_url).expect("PostgreSQL at 127.0.0.1:5432");
    let config = Config {
        op_policy: OpPolicy::Custom,
        ..Config::default()
    };
    let mut consumer = Consumer::open(store, &url.checkpoint_key(), config)
        .unwrap()
        .with_transactional_handler(Ledger);
    consumer.verbose = false;
    let source = Trickle(ordo_runtime::open_source(url).unwrap());
    // Commits every 64 deliveries (never by the clock), so a crash finds applied works
    // of up to 63 deliveries uncommitted.
    let options = RunOptions {
        exit_when_idle: crash_after.is_none(),
        commit_events_max: 64,
        commit_interval_ms: 3_600_000,
        ..RunOptions::default()
    };
    let stop = AtomicBool::new(false);
    let Some(crash_after) = crash_after else {
        let mut source = source;
        let report = ordo_runtime::run(&mut consumer, &mut source, &options, &stop).unwrap();
        assert_eq!(report.end, RunEnd::Idle);
        return;
    };
    let mut source = CrashAfter::new(source, crash_after);
    match ordo_runtime::run(&mut consumer, &mut source, &options, &stop) {
        Err(RunError::Source(SourceError::Crashed { .. })) => {}
        other => panic!("the crash did not strike: {other:?}"),
    }
}

/// `(ordo's version, the team's rows)` per stream.
fn both(admin: &mut Client, schema: &str) -> BTreeMap<String, (i64, i64)> {
    let mut both: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for row in admin
        .query(
            &format!("SELECT stream, applied FROM {schema}.streams"),
            &[],
        )
        .unwrap()
    {
        both.entry(row.get(0)).or_default().0 = row.get(1);
    }
    for row in admin
        .query(
            &format!("SELECT stream, COUNT(*) FROM {schema}.team_ledger GROUP BY stream"),
            &[],
        )
        .unwrap()
    {
        both.entry(row.get(0)).or_default().1 = row.get(1);
    }
    both
}

#[test]
fn crashes_leave_the_teams_rows_and_ordos_versions_equal() {
    let schema = format!("ordo_txn_{}", std::process::id());
    let mut admin = Client::connect(POSTGRES, NoTls).expect("PostgreSQL at 127.0.0.1:5432");
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.team_ledger (stream TEXT NOT NULL, version BIGINT NOT NULL,
                 amount BIGINT NOT NULL, PRIMARY KEY (stream, version));"
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("deposits.jsonl");
    std::fs::write(&input, events()).unwrap();
    let url = SourceUrl::parse(&format!("file:{}", input.display())).unwrap();
    let store_url = format!("{POSTGRES}?schema={schema}");
    for crash_after in [37, 150, 151, 300, 90] {
        run(&url, &store_url, Some(crash_after));
        for (stream, (ordo, team)) in both(&mut admin, &schema) {
            assert_eq!(ordo, team, "after a crash at {crash_after}: `{stream}`");
        }
    }
    run(&url, &store_url, None);
    let end = both(&mut admin, &schema);
    for (stream, (ordo, team)) in &end {
        assert_eq!(ordo, team, "at the end: `{stream}`");
        let expected = if stream == "account-7" { 8 } else { 40 };
        assert_eq!(*ordo, expected, "`{stream}`");
    }
    assert_eq!(end.len(), 30);
    let reason: String = admin
        .query_one(
            &format!("SELECT reason FROM {schema}.dead_letters WHERE stream = 'account-7'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert!(reason.contains("a deposit of -5"), "{reason}");
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}
