"""`prepay broker-sync`: write Mosquitto's password file from the live gateway credentials
(hashes only) plus the static service accounts, then ask the broker to reload (SIGHUP).
Run it after commissioning or revoking a gateway, or every few seconds with ``--every``."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)


def render(gateway_lines: list[str], static: Path | None) -> str:
    """Static accounts first (the cloud's own), then gateways; a gateway line never replaces
    a static account of the same name."""
    lines: list[str] = []
    names: set[str] = set()
    if static is not None:
        for line in static.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                lines.append(line.strip())
                names.add(line.split(":", 1)[0])
    for line in gateway_lines:
        name = line.split(":", 1)[0]
        if name in names:
            log.error("gateway credential %r collides with a static account; skipped", name)
            continue
        lines.append(line)
        names.add(name)
    return "\n".join(lines) + "\n"


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically replace ``path`` (mode 0600) when its content differs."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)
    return True


def reload_broker(pid_file: Path) -> None:
    pid = int(pid_file.read_text().strip())
    os.kill(pid, signal.SIGHUP)
    log.info("asked the broker (pid %d) to reload its password file", pid)
