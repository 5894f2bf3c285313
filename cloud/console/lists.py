"""Lists in the console: one page of rows with the total, and the same rows as an Excel
file (openpyxl, write-only)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Query
from fastapi.responses import Response
from openpyxl import Workbook

PAGE_SIZE = 50
EXPORT_LIMIT = 50_000
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

#: A list page's query parameters: where the page starts, and ``export=xlsx`` for the file.
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Export = Annotated[str, Query(max_length=8)]


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int
    total: int

    @property
    def number(self) -> int:
        return self.offset // self.limit + 1

    @property
    def pages(self) -> int:
        return max(1, (self.total + self.limit - 1) // self.limit)

    @property
    def previous(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None

    @property
    def next(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None


def page_of(offset: int | None, total: int, limit: int = PAGE_SIZE) -> Page:
    off = max(0, offset or 0)
    return Page(min(off, max(0, total - 1)) if total else 0, limit, total)


Sheet = tuple[str, Sequence[str], Iterable[Sequence[Any]]]


def xlsx(filename: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Response:
    return xlsx_sheets(filename, [("", headers, rows)])


def xlsx_sheets(filename: str, sheets: Sequence[Sheet]) -> Response:
    """Several lists in one workbook, a sheet each (an empty title keeps openpyxl's)."""
    wb = Workbook(write_only=True)
    for title, headers, rows in sheets:
        ws = wb.create_sheet(title[:31] or None)
        ws.append(list(headers))
        for row in rows:
            ws.append(list(row))  # numbers (Decimal included) stay numbers; times as text
    buf = io.BytesIO()
    wb.save(buf)
    return Response(
        buf.getvalue(),
        media_type=XLSX,
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"},
    )


def day_param(text: str) -> date | None:
    """A day typed or picked as YYYY-MM-DD (empty: the page's default); ValueError for
    anything else or a year outside 2000–2099."""
    text = text.strip()
    if not text:
        return None
    day = date.fromisoformat(text)
    if not 2000 <= day.year < 2100:
        raise ValueError(text)
    return day
