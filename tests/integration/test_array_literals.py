"""The array literals the set-based statements send survive PostgreSQL's parser intact."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa

from cloud.db import Database, pg_array, pg_text_array


async def test_text_and_typed_arrays_round_trip(db: Database) -> None:
    texts = ["a,b", 'quote " and \\ backslash', "NULL", "", None, "{braces}", "公摊 x"]
    ids = [uuid.uuid4(), None, uuid.UUID(int=0)]
    amounts = [Decimal("-1.25"), Decimal("0.00"), Decimal("1E+2"), None]
    times = [datetime(2026, 1, 1, 8, 30, 0, 123456, tzinfo=UTC), None]
    flags = [True, False, None]
    async with db.platform() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT CAST(:t AS text[]), CAST(:u AS uuid[]), CAST(:n AS numeric[]), "
                    "CAST(:ts AS timestamptz[]), CAST(:b AS boolean[])"
                ),
                {
                    "t": pg_text_array(texts),
                    "u": pg_array(ids),
                    "n": pg_array(amounts),
                    "ts": pg_array(times),
                    "b": pg_array(flags),
                },
            )
        ).one()
    assert list(row[0]) == texts
    assert list(row[1]) == ids
    assert list(row[2]) == amounts
    assert list(row[3]) == times
    assert list(row[4]) == flags
