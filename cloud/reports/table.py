"""The shape every report has, for the console's page, its print and its Excel file: the
columns (an English msgid and a kind saying how a cell is written), rows of plain values,
the totals row and a chart. Pure: the console translates and formats."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ZERO = Decimal("0.00")


def N_(message: str) -> str:
    """Marks a msgid for extraction (``make i18n``); the console translates it."""
    return message


@dataclass(frozen=True)
class Column:
    key: str
    label: str  # an English msgid
    kind: str = "text"  # text | money | kwh (2 places) | m3 (3 places) | register | int | label


@dataclass(frozen=True)
class Series:
    label: str  # msgid
    values: list[Decimal]


@dataclass(frozen=True)
class Chart:
    kind: str  # bar | line | pie
    categories: list[str]
    series: list[Series]


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]
    totals: dict[str, Any] = field(default_factory=dict)
    chart: Chart | None = None
    notes: tuple[str, ...] = ()  # msgids shown under the table

    def cell_rows(self) -> Iterable[list[Any]]:
        for row in self.rows:
            yield [row.get(c.key) for c in self.columns]


SUMMED = frozenset({"money", "kwh", "m3", "int"})


def totals(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sum of every summable column (money, energy, water, counts) over ``rows``."""
    out: dict[str, Any] = {}
    for c in columns:
        if c.kind in SUMMED:
            values = [r[c.key] for r in rows if r.get(c.key) is not None]
            out[c.key] = sum(values, Decimal(0) if c.kind != "int" else 0)
    return out


def chart_of(
    kind: str, rows: Sequence[dict[str, Any]], category: str, series: Sequence[Column]
) -> Chart:
    return Chart(
        kind,
        [str(r[category]) for r in rows],
        [Series(c.label, [Decimal(r.get(c.key) or 0) for r in rows]) for c in series],
    )
