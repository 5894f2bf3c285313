"""The stand-in's cryptography: merchants' test keys, RSA-SHA256 signatures, WeChat's
AEAD_AES_256_GCM resources, and the key files ``prepay merchant set`` reads."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from standins.wechatpay.server import WeChatPayStandIn


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def sign(key: rsa.RSAPrivateKey, message: str) -> str:
    raw = key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode()


def verify(key: rsa.RSAPublicKey, message: str, signature: str) -> bool:
    try:
        key.verify(
            base64.b64decode(signature), message.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def aes_gcm_encrypt(apiv3_key: str, plaintext: str, associated_data: str) -> dict[str, str]:
    """WeChat's AEAD_AES_256_GCM resource: a 12-character nonce, base64 ciphertext+tag."""
    nonce = secrets.token_hex(6)
    data = AESGCM(apiv3_key.encode()).encrypt(
        nonce.encode(), plaintext.encode(), associated_data.encode()
    )
    return {
        "algorithm": "AEAD_AES_256_GCM",
        "nonce": nonce,
        "associated_data": associated_data,
        "ciphertext": base64.b64encode(data).decode(),
    }


@dataclass(frozen=True)
class MerchantKeys:
    """A merchant's API certificate key and serial, its APIv3 key, and its public key."""

    private_key_pem: str
    cert_serial_no: str
    apiv3_key: str
    public_key_pem: str

    @classmethod
    def generate(cls, mchid: str) -> MerchantKeys:
        del mchid  # the serial is random, as a merchant's API certificate serial is to us
        key = new_key()
        return cls(
            private_pem(key),
            secrets.token_hex(20).upper(),
            secrets.token_urlsafe(24)[:32],
            public_pem(key.public_key()),
        )

    def __iter__(self) -> Iterator[str]:
        """``private_key_pem, cert_serial_no, apiv3_key, public_key_pem = keys``."""
        return iter(
            (self.private_key_pem, self.cert_serial_no, self.apiv3_key, self.public_key_pem)
        )

    def public_key(self) -> rsa.RSAPublicKey:
        key = serialization.load_pem_public_key(self.public_key_pem.encode())
        assert isinstance(key, rsa.RSAPublicKey)
        return key


def write_keys(
    directory: Path,
    stand_in: WeChatPayStandIn,
    mchid: str,
    keys: MerchantKeys,
    appids: list[str],
    sub_mchids: list[str],
) -> Path:
    """The merchant's test keys and the platform's public material, for ``prepay merchant set``:
    ``<mchid>_key.pem``, ``wechatpay_public_key.pem``, ``wechatpay_platform_cert.pem`` and
    ``<mchid>.json`` (mchid, serial, APIv3 key, public key id, appids, sub_mchids)."""
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / f"{mchid}_key.pem"
    key_file.write_text(keys.private_key_pem)
    key_file.chmod(0o600)
    (directory / "wechatpay_public_key.pem").write_text(stand_in.public_key_pem)
    (directory / "wechatpay_platform_cert.pem").write_text(stand_in.certificate_pem)
    meta = directory / f"{mchid}.json"
    meta.write_text(
        json.dumps(
            {
                "mchid": mchid,
                "cert_serial_no": keys.cert_serial_no,
                "apiv3_key": keys.apiv3_key,
                "private_key_file": key_file.name,
                "public_key_id": stand_in.public_key_id,
                "public_key_file": "wechatpay_public_key.pem",
                "platform_certificate_serial": stand_in.certificate_serial,
                "platform_certificate_file": "wechatpay_platform_cert.pem",
                "appids": appids,
                "sub_mchids": sub_mchids,
                "base_url": stand_in.url,
            },
            indent=2,
        )
    )
    meta.chmod(0o600)
    return meta
