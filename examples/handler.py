#!/usr/bin/env python3
"""A bank-ledger handler for `ordo run --handler http://127.0.0.1:8080/events`.

Standard library only. ordo sends each event when its turn comes (per account in version
order, never two calls for one account at once); this service keeps balances in its own
SQLite file and answers:

  200  applied (or already applied: the Idempotency-Key was seen before)
  422  refused for good: ordo dead-letters the event, the account waits behind it
  503  try again later: ordo retries with backoff

Events (the `op` is ours; ordo itself reads only `merge`):
  {"stream": "account-1", "type": "AccountOpened", "op": "open"}
  {"stream": "account-1", "type": "Deposited", "op": "deposit", "data": {"amount": 100}}
  {"stream": "account-1", "type": "Withdrawn", "op": "withdraw", "data": {"amount": 30}}
  {"stream": "account-1", "type": "AccountsMerged", "op": "merge",
   "data": {"from": ["account-2"]}, "after": [{"stream": "account-2", "version": 3}]}

Run:  python3 examples/handler.py --port 8080 --db ledger.db
"""

import argparse
import json
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (key TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS versions (stream TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, balance INTEGER NOT NULL,
                                     merged_into TEXT);
"""


class Refused(Exception):
    """The event is wrong for good (422)."""


class Ledger:
    def __init__(self, path):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()  # one writer; calls of different accounts queue here

    def handle(self, body):
        event, account = body["event"], body["document"]
        key, stream, version = event["id"], event["stream"], event["version"]
        with self.lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                # Idempotency: ordo sends an event again after a crash, with the same key.
                if db.execute("SELECT 1 FROM processed WHERE key = ?", (key,)).fetchone():
                    db.execute("ROLLBACK")
                    return 200, "already applied"
                # Our own version guard, behind ordo's ordering: an old version is a no-op.
                # A jump forward is fine: an operator skipped a version (`ordo dlq skip`).
                row = db.execute("SELECT version FROM versions WHERE stream = ?", (stream,)).fetchone()
                if row and version <= row[0]:
                    db.execute("ROLLBACK")
                    return 200, f"already at version {row[0]}"
                self.apply(db, event, account, body.get("sources"))
                db.execute("INSERT INTO processed (key) VALUES (?)", (key,))
                db.execute("INSERT INTO versions (stream, version) VALUES (?, ?) "
                           "ON CONFLICT (stream) DO UPDATE SET version = excluded.version",
                           (stream, version))
                db.execute("COMMIT")
                return 200, "applied"
            except Refused as refused:
                db.execute("ROLLBACK")
                return 422, str(refused)
            except Exception:
                db.execute("ROLLBACK")
                raise

    def apply(self, db, event, account, sources):
        kind = event.get("type")
        amount = (event.get("data") or {}).get("amount", 0)
        if sources is not None:  # a merge: fold each source's balance into `account`
            for source in sources:
                row = db.execute("SELECT balance FROM balances WHERE account = ?", (source,)).fetchone()
                self.add(db, account, row[0] if row else 0)
                db.execute("UPDATE balances SET balance = 0, merged_into = ? "
                           "WHERE account = ? OR merged_into = ?", (account, source, source))
        elif kind == "AccountOpened":
            self.add(db, account, 0)
        elif kind == "Deposited":
            self.add(db, account, int(amount))
        elif kind == "Withdrawn":
            row = db.execute("SELECT balance FROM balances WHERE account = ?", (account,)).fetchone()
            balance = row[0] if row else 0
            if amount > balance:
                raise Refused(f"{account}: withdrawal of {amount} exceeds the balance {balance}")
            self.add(db, account, -int(amount))
        else:
            raise Refused(f"unknown event type {kind!r}")

    def add(self, db, account, amount):
        db.execute("INSERT INTO balances (account, balance) VALUES (?, ?) "
                   "ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
                   (account, amount))


def serve(port, ledger):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: ordo pools its connections

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length))
                status, text = ledger.handle(body)
            except (ValueError, KeyError, TypeError) as error:
                status, text = 400, f"bad request: {error}"
            except Exception as error:  # the database failed: let ordo retry
                status, text = 503, f"unavailable: {error}"
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--db", default="ledger.db")
    args = parser.parse_args()
    try:
        serve(args.port, Ledger(args.db))
    except KeyboardInterrupt:
        sys.exit(0)
