"""A node's work in sqlite, so that `kill -9` at any step followed by a restart finishes the work exactly once.

One row per request the node handles (status `seen` → `proving` → `submitted` → `finalized` | `challenged`, or
`fraud` → `challenging` → `challenged` for a challenger), the block cursor of the event scan, and the gas and tx
hash of every transaction. Every change is one sqlite transaction (WAL, synchronous=FULL): a row is either in its
old or its new state after a crash. Statuses record intent *before* the chain call: after a restart a node re-reads
the request on chain before acting again, so a transaction sent just before the crash is never sent twice."""

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    request_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    tx_hash TEXT NOT NULL,
    gas_used INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    request_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass
class RequestRecord:
    request_id: int
    model_id: int
    status: str
    input: str  # the request's input commitment C_0, hex
    detail: dict
    created_at: float
    updated_at: float


class NodeState:
    """The sqlite file of one node (`path`), or an in-memory one (":memory:") for tests."""

    def __init__(self, path: Path | str = ":memory:"):
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _tx(self):
        return _Transaction(self.db)

    # ---------------------------------------------------------------- cursor

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    @property
    def cursor(self) -> int:
        """The last block whose events were recorded (-1: none yet)."""
        return int(self.get("cursor", "-1"))

    def record_scan(self, to_block: int, requests: list[tuple[int, int, str]] = ()) -> None:
        """Add newly seen requests (id, model id, input) as `seen` and move the cursor, in one transaction."""
        now = time.time()
        with self._tx() as db:
            for request_id, model_id, input_hex in requests:
                inserted = db.execute(
                    "INSERT OR IGNORE INTO requests (request_id, model_id, status, input, created_at, updated_at) VALUES (?, ?, 'seen', ?, ?, ?)",
                    (request_id, model_id, input_hex, now, now),
                ).rowcount
                if inserted:
                    db.execute("INSERT INTO events VALUES (?, 'seen', ?)", (request_id, now))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (str(to_block),))

    # -------------------------------------------------------------- requests

    def set_status(self, request_id: int, status: str, **detail) -> None:
        """Move a request to `status`, merging `detail` into its JSON detail (and logging the transition)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT detail FROM requests WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                raise KeyError(f"request {request_id} is not in {self.path}")
            merged = {**json.loads(row[0]), **detail}
            db.execute("UPDATE requests SET status = ?, detail = ?, updated_at = ? WHERE request_id = ?",
                       (status, json.dumps(merged), now, request_id))
            db.execute("INSERT INTO events VALUES (?, ?, ?)", (request_id, status, now))

    def record_tx(self, request_id: int, step: str, receipt) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO txs VALUES (?, ?, ?, ?, ?)",
                       (request_id, step, "0x" + bytes(receipt.transactionHash).hex(), int(receipt.gasUsed), time.time()))

    def request(self, request_id: int) -> RequestRecord | None:
        row = self.db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return _record(row) if row else None

    def requests(self, *statuses: str) -> list[RequestRecord]:
        """Requests in any of `statuses` (all if none given), oldest first."""
        if statuses:
            marks = ",".join("?" * len(statuses))
            rows = self.db.execute(f"SELECT * FROM requests WHERE status IN ({marks}) ORDER BY request_id", statuses)
        else:
            rows = self.db.execute("SELECT * FROM requests ORDER BY request_id")
        return [_record(r) for r in rows]

    def txs(self, step: str | None = None) -> list[dict]:
        rows = self.db.execute("SELECT request_id, step, tx_hash, gas_used, at FROM txs" + (" WHERE step = ?" if step else ""),
                               (step,) if step else ())
        return [dict(zip(("request_id", "step", "tx_hash", "gas_used", "at"), r)) for r in rows]

    def history(self, request_id: int) -> list[tuple[str, float]]:
        """Every status the request went through, with wall-clock times."""
        return list(self.db.execute("SELECT status, at FROM events WHERE request_id = ? ORDER BY rowid", (request_id,)))


def _record(row) -> RequestRecord:
    return RequestRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6])


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on an exception)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *_) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
