"""Merchants' secrets at rest: encrypted with a key from the environment (Fernet), never
logged. Outside production an unset key is the data directory's own, made once."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from cloud.errors import Invalid


class SecretBox:
    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise Invalid(
                "PREPAY_WECHATPAY_MERCHANT_KEY must be 32 bytes, urlsafe base64 (make one "
                "with: python3 -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from exc

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise Invalid("a merchant secret cannot be read with this key") from exc

    def __repr__(self) -> str:  # never show the key
        return "SecretBox(…)"


def box_for(key: str | None, data_dir: Path, environment: str) -> SecretBox:
    """The box of ``key``; unset: refused in production, else the data directory's key."""
    if key:
        return SecretBox(key)
    if environment == "production":
        raise Invalid("PREPAY_WECHATPAY_MERCHANT_KEY is not set")
    path = data_dir / "merchant.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it just now
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
    return SecretBox(path.read_bytes().strip())
