"""Languages of the console (DESIGN §16): zh-CN by default, English selectable. Every
string goes through the Babel catalogues in ``locale/``; msgids are English, so English
needs no catalogue. The ``.po`` files are compiled in memory at startup (no binary ``.mo``
in the repository); ``make i18n`` extracts and updates them with pybabel."""

from __future__ import annotations

import functools
import io
from contextvars import ContextVar
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALES = ("zh_CN", "en")
DEFAULT = "zh_CN"
LANG_COOKIE = "prepay_lang"
_DIR = Path(__file__).parent / "locale"

current: ContextVar[str] = ContextVar("console_locale", default=DEFAULT)


@functools.cache
def translations(locale: str) -> NullTranslations:
    po = _DIR / locale / "LC_MESSAGES" / "messages.po"
    if not po.exists():
        return NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=locale)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf)


def pick(cookie: str | None, query: str | None = None) -> str:
    for choice in (query, cookie):
        if choice in LOCALES:
            return choice
    return DEFAULT


def N_(message: str) -> str:
    """Marks a msgid for extraction; it is translated where it is shown."""
    return message


def gettext(message: str) -> str:
    return translations(current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current.get()).ngettext(singular, plural, n)


@functools.cache
def _parsed(name: str) -> Locale:
    return Locale.parse(name)


def babel_locale() -> Locale:
    # parsed once per language: Locale.parse costs 16 µs a call, and the room monitor
    # formats 8,000 values a refresh
    return _parsed(current.get())


def html_lang() -> str:
    return "zh-CN" if current.get() == "zh_CN" else "en"
