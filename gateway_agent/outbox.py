"""Store-and-forward queue on disk (SQLite, WAL). A row leaves only after the broker's PUBACK."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class Outbox:
    def __init__(self, path: Path, cap: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "kind TEXT NOT NULL, body BLOB NOT NULL)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS executed (command_id TEXT PRIMARY KEY, ack BLOB NOT NULL)"
        )
        self.cap = cap
        self.dropped = 0

    def put(self, kind: str, bodies: list[bytes]) -> int:
        """Append; when over the cap, the oldest readings are dropped and counted (the agent
        raises an alarm event for every drop). Returns how many were dropped now."""
        self.db.executemany(
            "INSERT INTO outbox (kind, body) VALUES (?, ?)", [(kind, b) for b in bodies]
        )
        over = self.depth() - self.cap
        if over > 0:
            self.db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                (over,),
            )
            self.dropped += over
            return over
        return 0

    def peek(self, kind: str, limit: int) -> list[tuple[int, bytes]]:
        return list(
            self.db.execute(
                "SELECT id, body FROM outbox WHERE kind = ? ORDER BY id LIMIT ?", (kind, limit)
            )
        )

    def remove(self, ids: list[int]) -> None:
        self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def depth(self) -> int:
        row = self.db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(row[0])

    def executed(self, command_id: str) -> bytes | None:
        row = self.db.execute(
            "SELECT ack FROM executed WHERE command_id = ?", (command_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def remember(self, command_id: str, ack: bytes) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO executed (command_id, ack) VALUES (?, ?)", (command_id, ack)
        )

    def close(self) -> None:
        self.db.close()
