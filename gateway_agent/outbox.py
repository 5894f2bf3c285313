"""Store-and-forward queue on disk (SQLite, WAL). A row leaves only after the broker's PUBACK.

Two streams: readings (published in batches) and events (alarms, config results, device
health; published one by one). The cap counts readings only. When it is reached, the oldest
readings are dropped first (the newest registers carry the cumulative totals, so the cloud
loses resolution, not consumption), every drop is counted, and the agent raises a
``queue_overflow`` event and a metric. Events are never dropped by the cap.

A telemetry batch is published with a sequence number and its rows are marked with it; they
are deleted only when the cloud's receipt for that batch arrives (not on the broker's
PUBACK alone: a broker that restarts before a cloud worker has subscribed again drops what
it acknowledged). Unconfirmed batches are unmarked and sent again after a timeout, on a
new broker session and at start.

The command journal records a command id before the meter is touched and its ack after, so
a command is carried out at most once per id, across restarts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

READING = "reading"
EVENT = "event"
CACHE_KIB = 256  # SQLite page cache of the outbox connection


class Outbox:
    def __init__(self, path: Path, cap: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # SQLite's default page cache is 2 MB per connection, and the backlog fills it: the
        # agent reads the queue in id order, so a small cache costs no speed (see
        # tests/bench/README.md) and keeps ~1.8 MB out of a gateway's resident memory.
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "kind TEXT NOT NULL, body BLOB NOT NULL)"
        )
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(outbox)")}
        if "batch" not in columns:
            self.db.execute("ALTER TABLE outbox ADD COLUMN batch INTEGER")
        self.db.execute("CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id)")
        self.db.execute("CREATE INDEX IF NOT EXISTS outbox_batch ON outbox (batch)")
        self.unmark_all()  # batches of an earlier run were never confirmed: send them again
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS commands (command_id TEXT PRIMARY KEY, ack BLOB)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self.cap = cap
        row = self.db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        self.dropped = int(row[0]) if row else 0
        self._readings = self._count(READING)

    def _count(self, kind: str) -> int:
        row = self.db.execute("SELECT count(*) FROM outbox WHERE kind = ?", (kind,)).fetchone()
        return int(row[0])

    def put(self, kind: str, bodies: list[bytes]) -> int:
        """Append; returns how many of the oldest readings were dropped to stay at the cap."""
        if not bodies:
            return 0
        self.db.execute("BEGIN")
        try:
            self.db.executemany(
                "INSERT INTO outbox (kind, body) VALUES (?, ?)", [(kind, b) for b in bodies]
            )
            over = 0
            if kind == READING:
                self._readings += len(bodies)
                over = self._readings - self.cap
                if over > 0:
                    self.db.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE kind = ? "
                        "ORDER BY id LIMIT ?)",
                        (READING, over),
                    )
                    self._readings -= over
                    self.dropped += over
                    self.db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('dropped', ?)",
                        (str(self.dropped),),
                    )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return max(0, over)

    def peek(self, kind: str, limit: int) -> list[tuple[int, bytes]]:
        return list(
            self.db.execute(
                "SELECT id, body FROM outbox WHERE kind = ? ORDER BY id LIMIT ?", (kind, limit)
            )
        )

    def peek_unsent(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest readings not in any unconfirmed batch."""
        return list(
            self.db.execute(
                "SELECT id, body FROM outbox WHERE kind = ? AND batch IS NULL ORDER BY id LIMIT ?",
                (READING, limit),
            )
        )

    def mark(self, ids: list[int], batch: int) -> None:
        """Put the rows just peeked (the oldest unsent ones) into ``batch``."""
        self.db.execute(
            "UPDATE outbox SET batch = ? WHERE kind = ? AND batch IS NULL AND id BETWEEN ? AND ?",
            (batch, READING, min(ids), max(ids)),
        )

    def confirm(self, batch: int) -> int:
        """The cloud has stored ``batch``: forget its rows; returns how many."""
        cur = self.db.execute("DELETE FROM outbox WHERE batch = ? AND kind = ?", (batch, READING))
        self._readings -= cur.rowcount
        return cur.rowcount

    def unmark(self, batch: int) -> None:
        self.db.execute("UPDATE outbox SET batch = NULL WHERE batch = ?", (batch,))

    def unmark_all(self) -> None:
        self.db.execute("UPDATE outbox SET batch = NULL WHERE batch IS NOT NULL")

    def remove(self, ids: list[int], kind: str = READING) -> None:
        if not ids:
            return
        cur = self.db.execute(
            "DELETE FROM outbox WHERE id BETWEEN ? AND ? AND kind = ?", (min(ids), max(ids), kind)
        )
        if kind == READING:
            self._readings -= cur.rowcount

    def depth(self, kind: str = READING) -> int:
        return self._readings if kind == READING else self._count(kind)

    # -- the command journal ---------------------------------------------------------------
    def begin(self, command_id: str) -> tuple[bool, bytes | None]:
        """Claim ``command_id``: ``(True, None)`` the first time; ``(False, ack)`` when it was
        executed before; ``(False, None)`` when an earlier run was cut off mid-execution."""
        try:
            self.db.execute(
                "INSERT INTO commands (command_id, ack) VALUES (?, NULL)", (command_id,)
            )
        except sqlite3.IntegrityError:
            row = self.db.execute(
                "SELECT ack FROM commands WHERE command_id = ?", (command_id,)
            ).fetchone()
            return False, None if row[0] is None else bytes(row[0])
        return True, None

    def remember(self, command_id: str, ack: bytes) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO commands (command_id, ack) VALUES (?, ?)", (command_id, ack)
        )

    def close(self) -> None:
        self.db.close()
