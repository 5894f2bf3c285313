"""Settings of the notification providers (env prefix ``PREPAY_NOTIFY_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PREPAY_NOTIFY_", env_file=".env", extra="ignore")

    # sms: "twilio" or "log" (development and the demo without a stand-in)
    sms_provider: str = Field(default="log", pattern="^(twilio|log)$")
    twilio_account_sid: str = "AC00000000000000000000000000000000"
    twilio_auth_token: SecretStr | None = None
    twilio_from: str = "+15005550006"
    # where the Twilio library's requests go instead of https://api.twilio.com (a stand-in)
    twilio_base_url: str | None = None
    # this API's address as Twilio calls it; status callbacks are signed over it
    public_base_url: str | None = None
    wechat_appid: str | None = None
    wechat_secret: SecretStr | None = None
    wechat_base_url: str | None = None  # instead of https://api.weixin.qq.com (a stand-in)
    wechat_page: str = "pages/index/index"
    # subscribe-message template id per kind; unset kinds use "tmpl-<kind>"
    wechat_templates: dict[str, str] = Field(default_factory=dict)
    batch: int = 200  # rows a worker claims at once
    concurrency: int = 64  # sends in flight per worker
    lease_s: float = 300.0  # a claim older than this (a worker died) is taken again

    def wechat_template(self, kind: str) -> str:
        return self.wechat_templates.get(kind, f"tmpl-{kind}")
