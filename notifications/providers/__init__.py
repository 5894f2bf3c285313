"""Providers behind one small interface: given a message, send it and say what became of
it. Adding a provider (a Chinese SMS gateway) is one class with ``channel`` and ``send``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # the provider took it (provider_id set)
    TRANSIENT = "transient"  # try again later (outage, rate limit, timeout)
    PERMANENT = "permanent"  # will never go (bad number, refused): failed
    NO_CONSENT = "no_consent"  # WeChat: no acceptance left (43101); fall back to SMS


@dataclass(frozen=True)
class Message:
    tenant_id: uuid.UUID
    notification_id: uuid.UUID
    kind: str
    to: str  # E.164 phone or WeChat openid
    text: str
    template_id: str | None = None  # WeChat subscribe template
    data: dict[str, dict[str, str]] = field(default_factory=dict)  # WeChat keyword fields


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    provider_id: str | None = None
    segments: int | None = None
    answer: dict[str, Any] = field(default_factory=dict)  # what the provider said


class Provider(Protocol):
    channel: str

    async def send(self, message: Message) -> Result: ...

    async def close(self) -> None: ...
