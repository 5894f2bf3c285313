"""Settings of WeChat Pay (env prefix ``PREPAY_WECHATPAY_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PREPAY_WECHATPAY_", env_file=".env", extra="ignore"
    )

    # every call goes here instead of https://api.mch.weixin.qq.com (a stand-in)
    base_url: str | None = None
    # where WeChat's servers reach this API (the notify URLs are built on it)
    public_base_url: str = "http://127.0.0.1:8000"
    # the key (Fernet, urlsafe base64 of 32 bytes) that encrypts merchants' secrets at rest;
    # unset outside production: a key of the data directory's own (.prepay/merchant.key)
    merchant_key: SecretStr | None = None
    # mini-program logins (code2session) go here instead of https://api.weixin.qq.com
    wechat_api_base_url: str | None = None
    order_minutes: int = Field(default=15, ge=1, le=120)
    query_after_s: int = Field(default=120, ge=10)
    query_every_s: int = Field(default=60, ge=5)
    timeout_s: float = 10.0
