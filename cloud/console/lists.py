"""Lists in the console: one page of rows with the total, and the same rows as an Excel
file (openpyxl, write-only). ``search`` narrows a short list (a group's operators, roles,
tariffs, grants, gateways, import runs) to the rows holding the search box's words and
cuts the page out of it, as the accounts search does in SQL."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import quote

from fastapi import Query, Request
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


T = TypeVar("T")


def query(q: str) -> str:
    """The search box's text as searched: trimmed; one with control characters is none."""
    text = q.strip()
    return "" if any(ord(c) < 32 or ord(c) == 127 for c in text) else text


def matching(items: Iterable[T], q: str, *texts: Callable[[T], Any]) -> list[T]:
    """The items any of whose ``texts`` holds every word of ``q`` (case-insensitive;
    an empty ``q`` keeps them all)."""
    words = query(q).casefold().split()
    if not words:
        return list(items)
    kept = []
    for item in items:
        hay = " ".join(str(t(item) or "") for t in texts).casefold()
        if all(w in hay for w in words):
            kept.append(item)
    return kept


@dataclass(frozen=True)
class Found(Generic[T]):
    items: list[T]  # this page's
    page: Page
    q: str


def search(
    items: Iterable[T], q: str, offset: int, *texts: Callable[[T], Any], limit: int = PAGE_SIZE
) -> Found[T]:
    """One page of the items matching ``q`` (:func:`matching`), with the pager's numbers."""
    hits = matching(items, q, *texts)
    page = page_of(offset, len(hits), limit)
    return Found(hits[page.offset : page.offset + page.limit], page, q)


MAX_OFFSET = 1_000_000


def asked(request: Request, param: str = "offset") -> tuple[str, int]:
    """The search box's ``q`` and the pager's offset in the page's address; what is not
    a search or an offset (too long, not a number) is read as none."""
    q = query(request.query_params.get("q", "")[:64])
    raw = request.query_params.get(param, "")
    offset = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 7 else 0
    return q, min(offset, MAX_OFFSET)


def listed(
    request: Request, items: Iterable[T], *texts: Callable[[T], Any], param: str = "offset"
) -> Found[T]:
    """:func:`search` with the page's own ``q`` and offset (``param``: the offset's name,
    for a second list on the same page)."""
    q, offset = asked(request, param)
    return search(items, q, offset, *texts)


def exported(request: Request, items: Iterable[T], *texts: Callable[[T], Any]) -> list[T]:
    """Every item of the page's search, for its Excel file."""
    return matching(items, asked(request)[0], *texts)[:EXPORT_LIMIT]


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
