"""``prepay merchant set|show``: a property group's WeChat Pay merchant, set by the platform
operator. Secrets are read from files (never from the command line, which ``ps`` and the
shell's history show) and stored sealed; ``show`` never prints them."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa


def merchant_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("merchant", help="a property group's WeChat Pay merchant settings")
    msub = m.add_subparsers(dest="merchant_cmd", required=True)
    s = msub.add_parser("set", help="store (or replace) the settings; secrets read from files")
    s.add_argument("--tenant", required=True, help="property group slug")
    s.add_argument(
        "--mode",
        choices=("partner", "direct"),
        required=True,
        help="partner: service provider (服务商) with the group a sub-merchant",
    )
    s.add_argument("--mchid", required=True, help="sp_mchid (partner) or the group's mchid")
    s.add_argument("--sub-mchid", help="the group's sub_mchid (partner mode)")
    s.add_argument("--appid", required=True, help="sp_appid (partner) or the group's appid")
    s.add_argument("--sub-appid", help="the group's own mini-program (partner mode)")
    s.add_argument("--serial", required=True, help="merchant certificate serial number")
    s.add_argument("--private-key", type=Path, required=True, help="merchant key (PEM file)")
    s.add_argument("--apiv3-key-file", type=Path, required=True, help="file holding the APIv3 key")
    s.add_argument("--app-secret-file", type=Path, help="file holding the mini-program's AppSecret")
    s.add_argument("--public-key", type=Path, help="WeChat Pay public key (PEM file)")
    s.add_argument("--public-key-id", help="its id (PUB_KEY_ID_…); without: platform certificates")
    sh = msub.add_parser("show", help="the settings, without secrets")
    sh.add_argument("--tenant", required=True)


def _read(path: Path | None) -> str | None:
    return None if path is None else path.read_text(encoding="utf-8").strip()


async def run_merchant(wiring: Any, args: argparse.Namespace) -> int:
    from cloud.errors import DomainError
    from cloud.payments.wechat.merchant import MerchantSettings, set_merchant

    svc = wiring.services
    async with wiring.db.platform() as conn:
        tenant_id = await conn.scalar(
            sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": args.tenant}
        )
    if tenant_id is None:
        print(f"prepay merchant: no property group {args.tenant!r}", file=sys.stderr)
        return 1
    if args.merchant_cmd == "show":
        try:
            m = await svc.wechat_pay.merchant(tenant_id)
        except DomainError as exc:
            print(f"prepay merchant: {exc}", file=sys.stderr)
            return 1
        s = m.settings
        print(
            f"mode {s.mode}; mchid {s.mchid}; sub_mchid {s.sub_mchid or '-'}; appid {s.appid};"
            f" sub_appid {s.sub_appid or '-'}; serial {s.cert_serial_no}; "
            f"public key id {s.public_key_id or '- (platform certificates)'}; "
            f"app secret {'set' if s.app_secret else 'not set'}; "
            f"updated {m.updated_at:%Y-%m-%d %H:%M}"
        )
        return 0
    try:
        settings = MerchantSettings(
            mode=args.mode,
            mchid=args.mchid,
            appid=args.appid,
            cert_serial_no=args.serial,
            private_key=_read(args.private_key) or "",
            apiv3_key=_read(args.apiv3_key_file) or "",
            sub_mchid=args.sub_mchid,
            sub_appid=args.sub_appid,
            app_secret=_read(args.app_secret_file),
            public_key=_read(args.public_key),
            public_key_id=args.public_key_id,
        )
        await set_merchant(
            wiring.db, svc.wechat_pay.box, tenant_id, settings, "platform:cli", datetime.now(UTC)
        )
    except OSError as exc:
        print(f"prepay merchant set: cannot read a file: {exc}", file=sys.stderr)
        return 1
    except DomainError as exc:
        print(f"prepay merchant set: {exc}", file=sys.stderr)
        return 1
    print(
        f"merchant of {args.tenant} set ({args.mode}, {args.mchid}"
        f"{' / ' + args.sub_mchid if args.sub_mchid else ''})"
    )
    return 0
