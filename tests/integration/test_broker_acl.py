"""Broker security against a real Mosquitto started from the SHIPPED infra/mosquitto files.

The broker runs the shipped ``mosquitto.conf`` with only listener ports/addresses, file
paths and ``user`` substituted, the shipped ``acl`` file unchanged, generated password
files (gateways G1 and G2; the cloud account ``prepay-cloud``) and a throw-away CA whose
server certificate serves the gateways' TLS listener. Clients talk MQTT 3.1.1 with QoS 1,
like the agent and the cloud.

"Not delivered" is never concluded from a timeout alone: each forbidden message is
followed by an allowed one on the same path (a positive control), and the receiver reads
until the control arrives. Mosquitto delivers what it routes to one subscriber in order,
and a QoS 1 publish is routed before it is PUBACKed, so a forbidden message that got
through would have arrived before its control.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from contract.mqtt import DownKind, Topics, UpKind

INFRA = Path(__file__).resolve().parents[2] / "infra" / "mosquitto"
SHIPPED_CONF = INFRA / "mosquitto.conf"
SHIPPED_ACL = INFRA / "acl"

_SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
MOSQUITTO = shutil.which("mosquitto", path=_SBIN)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd", path=_SBIN)
OPENSSL = shutil.which("openssl")

# Shipped listener port -> role. The test maps each to a free local port.
CLOUD_LISTENER, GATEWAY_LISTENER = 1883, 8883
CLOUD = "prepay-cloud"
PASSWORDS = {"G1": "g1-secret", "G2": "g2-secret", CLOUD: "cloud-secret"}
GATEWAYS_PASSWD, CLOUD_PASSWD = "gateways.passwd", "cloud.passwd"
# Where each user's credential is installed (README: the two files never share a user).
PASSWD_FILES = {GATEWAYS_PASSWD: ("G1", "G2"), CLOUD_PASSWD: (CLOUD,)}
# Directives whose value is a file the test provides, found by the shipped file's name.
FILE_DIRECTIVES = {"password_file", "acl_file", "cafile", "certfile", "keyfile"}
NOT_AUTHORIZED = {5, 0x87}  # MQTT 3.1.1 CONNACK 5 / the MQTT 5 code paho maps it to

T = Topics()  # the shipped ACL is written for the default prefix "prepay"


# --------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def derive_config(
    shipped: str, *, ports: dict[int, int], files: dict[str, Path], state_dir: Path
) -> str:
    """The shipped config with only ports, bind addresses, file paths and `user` changed."""
    out: list[str] = []
    for line in shipped.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            out.append(line)
            continue
        key = words[0]
        if key == "listener":
            out.append(f"listener {ports[int(words[1])]} 127.0.0.1")
        elif key in FILE_DIRECTIVES:
            name = Path(words[1]).name
            assert name in files, f"the test provides no file for `{line}`"
            out.append(f"{key} {files[name]}")
        elif key == "persistence_location":
            out.append(f"persistence_location {state_dir}/")
        elif key == "pid_file":
            out.append(f"pid_file {state_dir}/mosquitto.pid")
        elif key == "log_dest":
            out.append("log_dest stderr")  # captured into the test's log file
        elif key == "user":
            out.append(f"user {getpass.getuser()}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _make_tls(directory: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, named as in the shipped conf."""
    assert OPENSSL is not None
    ca_key, ca = directory / "ca.key", directory / "prepay-ca.crt"
    key, csr, crt = directory / "broker.key", directory / "broker.csr", directory / "broker.crt"
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run(OPENSSL, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca),
         "-days", "2", "-subj", "/CN=PrepayCloud test CA")  # fmt: skip
    _run(OPENSSL, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    _run(OPENSSL, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return {ca.name: ca, crt.name: crt, key.name: key}


def _make_passwd_files(directory: Path) -> dict[str, Path]:
    assert MOSQUITTO_PASSWD is not None
    made: dict[str, Path] = {}
    for name, users in PASSWD_FILES.items():
        path = directory / name
        for i, user in enumerate(users):
            create = ("-c",) if i == 0 else ()
            _run(MOSQUITTO_PASSWD, *create, "-b", str(path), user, PASSWORDS[user])
        made[name] = path
    return made


@dataclass
class Broker:
    directory: Path
    cloud_port: int
    gateway_port: int
    ca: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def gateway(
        self,
        user: str | None,
        *,
        password: str | None = None,
        identifier: str | None = None,
        clean_session: bool = True,
        will: aiomqtt.Will | None = None,
        tls: bool = True,
        timeout: float = 10,
    ) -> aiomqtt.Client:
        """A client on the gateways' TLS listener (identifier defaults to the username,
        as the agent does)."""
        return aiomqtt.Client(
            "127.0.0.1",
            self.gateway_port,
            identifier=identifier or user or f"anon-{uuid.uuid4().hex[:8]}",
            username=user,
            password=PASSWORDS.get(user or "") if password is None else password,
            tls_context=ssl.create_default_context(cafile=str(self.ca)) if tls else None,
            clean_session=clean_session,
            will=will,
            keepalive=30,
            timeout=timeout,
        )

    def cloud(
        self,
        identifier: str | None = None,
        *,
        user: str | None = CLOUD,
        password: str | None = None,
    ) -> aiomqtt.Client:
        """A client on the cloud services' loopback listener."""
        return aiomqtt.Client(
            "127.0.0.1",
            self.cloud_port,
            identifier=identifier or f"cloud-{uuid.uuid4().hex[:8]}",
            username=user,
            password=PASSWORDS.get(user or "") if password is None else password,
            keepalive=30,
            timeout=10,
        )

    def revoke(self, user: str) -> None:
        """Delete a gateway credential and reload, as README.md tells operators to."""
        assert MOSQUITTO_PASSWD is not None
        _run(MOSQUITTO_PASSWD, "-D", str(self.directory / GATEWAYS_PASSWD), user)
        self.proc.send_signal(signal.SIGHUP)


def _wait_listening(proc: subprocess.Popen[bytes], ports: list[int], log: Path) -> None:
    deadline = time.monotonic() + 15
    pending = set(ports)
    while pending:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited ({proc.returncode}):\n{log.read_text()}")
        for port in sorted(pending):
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    pending.discard(port)
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"mosquitto not listening on {pending}:\n{log.read_text()}")
        time.sleep(0.05)


@contextlib.contextmanager
def run_broker(directory: Path) -> Iterator[Broker]:
    if MOSQUITTO is None or MOSQUITTO_PASSWD is None:
        pytest.skip("mosquitto / mosquitto_passwd not installed (apt-get install mosquitto)")
    if OPENSSL is None:
        pytest.skip("openssl command not installed: needed to make the test CA for TLS")
    acl = directory / "acl"
    shutil.copyfile(SHIPPED_ACL, acl)
    files = {"acl": acl, **_make_passwd_files(directory), **_make_tls(directory)}
    state = directory / "state"
    state.mkdir()
    last_error: Exception | None = None
    for attempt in range(3):  # a free port can be taken before mosquitto binds it
        ports = {CLOUD_LISTENER: _free_port(), GATEWAY_LISTENER: _free_port()}
        conf = directory / "mosquitto.conf"
        conf.write_text(
            derive_config(SHIPPED_CONF.read_text(), ports=ports, files=files, state_dir=state)
        )
        log = directory / f"mosquitto-{attempt}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(conf)], stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            _wait_listening(proc, list(ports.values()), log)
        except (RuntimeError, TimeoutError) as exc:
            last_error = exc
            _stop(proc)
            continue
        try:
            yield Broker(
                directory=directory,
                cloud_port=ports[CLOUD_LISTENER],
                gateway_port=ports[GATEWAY_LISTENER],
                ca=files["prepay-ca.crt"],
                proc=proc,
                log=log,
            )
        finally:
            _stop(proc)
        return
    raise RuntimeError(f"could not start mosquitto: {last_error}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with run_broker(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def token(label: str) -> bytes:
    return f"{label}-{uuid.uuid4().hex}".encode()


def body(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes | bytearray), message.payload
    return bytes(message.payload)


def seen(messages: list[aiomqtt.Message]) -> list[tuple[str, bytes]]:
    return [(m.topic.value, body(m)) for m in messages]


async def receive_until(
    client: aiomqtt.Client, *controls: bytes, timeout: float = 10.0
) -> list[aiomqtt.Message]:
    """Every message the client gets until all ``controls`` have arrived."""
    want = set(controls)
    got: list[aiomqtt.Message] = []
    try:
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                got.append(message)
                want.discard(body(message))
                if not want:
                    return got
    except TimeoutError:
        pass
    pytest.fail(f"control message(s) {sorted(want)} never arrived; got {seen(got)}")


def payloads(messages: list[aiomqtt.Message]) -> set[bytes]:
    return {body(m) for m in messages}


def _code(exc: aiomqtt.MqttCodeError) -> int | None:
    rc = exc.rc
    return rc.value if isinstance(rc, ReasonCode) else rc


def _drop_connection(client: aiomqtt.Client) -> None:
    """Cut the TCP connection without DISCONNECT, as a power cut or a dead link would."""
    sock = client._client.socket()
    assert isinstance(sock, socket.socket), sock  # ssl.SSLSocket is one
    sock.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------
# The shipped files themselves
# --------------------------------------------------------------------------------------
def _listeners(conf: str) -> tuple[dict[str, str], dict[int, dict[str, list[str]]]]:
    general: dict[str, str] = {}
    listeners: dict[int, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in conf.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "listener":
            current = listeners[int(words[1])] = {"bind": words[2:]}
        elif current is None:
            general[words[0]] = " ".join(words[1:])
        else:
            current[words[0]] = words[1:]
    return general, listeners


def test_shipped_config_is_hardened() -> None:
    general, listeners = _listeners(SHIPPED_CONF.read_text())
    assert general["per_listener_settings"] == "true"
    assert general["persistence"] == "true"
    assert set(listeners) == {CLOUD_LISTENER, GATEWAY_LISTENER}
    for port, opts in listeners.items():
        assert opts["allow_anonymous"] == ["false"], port
        assert Path(opts["acl_file"][0]).name == "acl", port
    assert listeners[CLOUD_LISTENER]["bind"] == ["127.0.0.1"]
    assert Path(listeners[CLOUD_LISTENER]["password_file"][0]).name == CLOUD_PASSWD
    gw = listeners[GATEWAY_LISTENER]
    assert Path(gw["password_file"][0]).name == GATEWAYS_PASSWD
    assert gw["use_username_as_clientid"] == ["true"]
    assert {"certfile", "keyfile", "cafile"} <= set(gw)
    rules = [line.split() for line in SHIPPED_ACL.read_text().splitlines()]
    rules = [r for r in rules if r and not r[0].startswith("#")]
    assert not any("%c" in " ".join(r) for r in rules), "ACL must never trust the client id"
    assert ["pattern", "write", "prepay/gw/%u/up/#"] in rules
    assert ["pattern", "read", "prepay/gw/%u/down/#"] in rules


# --------------------------------------------------------------------------------------
# Against the running broker
# --------------------------------------------------------------------------------------
async def test_gateway_uplink_reaches_the_cloud(broker: Broker) -> None:
    sent = {kind: token(f"g1-{kind.value}") for kind in UpKind}
    async with broker.cloud() as cloud, broker.gateway("G1") as g1:
        await cloud.subscribe(T.all_up(), qos=1)
        for kind, payload in sent.items():
            await g1.publish(T.up("G1", kind), payload, qos=1, retain=kind is UpKind.STATE)
        got = await receive_until(cloud, *sent.values())
    assert {(T.up("G1", k), b) for k, b in sent.items()} <= set(seen(got))


async def test_gateway_cannot_write_another_gateways_topics_nor_any_downlink(
    broker: Broker,
) -> None:
    forged = {
        T.up("G2", UpKind.TELEMETRY): token("forged-g2-telemetry"),
        T.up("G2", UpKind.ACK): token("forged-g2-ack"),
        T.up("G2", UpKind.STATE): token("forged-g2-state"),
        T.down("G2", DownKind.CMD): token("forged-g2-cmd"),
        T.down("G2", DownKind.CONFIG): token("forged-g2-config"),
        T.down("G1", DownKind.CMD): token("forged-own-cmd"),
        T.down("G1", DownKind.CONFIG): token("forged-own-config"),
    }
    cloud_forged = token("cloud-forged-g1-telemetry")
    async with AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(broker.cloud())
        cloud_writer = await stack.enter_async_context(broker.cloud())
        g1 = await stack.enter_async_context(broker.gateway("G1"))
        g2 = await stack.enter_async_context(broker.gateway("G2"))
        await cloud.subscribe(T.all_up(), qos=1)
        await g1.subscribe(f"{T.prefix}/gw/G1/down/#", qos=1)
        await g2.subscribe(f"{T.prefix}/gw/G2/down/#", qos=1)

        for topic, payload in forged.items():  # retained too: must not be stored either
            await g1.publish(topic, payload, qos=1, retain=True)
        # The cloud account may not impersonate a gateway's uplink.
        await cloud_writer.publish(T.up("G1", UpKind.TELEMETRY), cloud_forged, qos=1)
        # Positive controls, after the forbidden messages on the same paths.
        up_ok, g1_ok, g2_ok = token("g1-telemetry"), token("cmd-g1"), token("cmd-g2")
        await g1.publish(T.up("G1", UpKind.TELEMETRY), up_ok, qos=1)
        await cloud_writer.publish(T.down("G1", DownKind.CMD), g1_ok, qos=1)
        await cloud_writer.publish(T.down("G2", DownKind.CMD), g2_ok, qos=1)

        at_cloud = await receive_until(cloud, up_ok)
        at_g1 = await receive_until(g1, g1_ok)
        at_g2 = await receive_until(g2, g2_ok)

    bad = set(forged.values()) | {cloud_forged}
    assert not bad & payloads(at_cloud), seen(at_cloud)
    assert not bad & payloads(at_g1), seen(at_g1)
    assert not bad & payloads(at_g2), seen(at_g2)

    # Nothing forged was retained: fresh subscriptions get retained messages (queued before
    # the SUBACK), then a live control message.
    async with broker.cloud() as cloud, broker.gateway("G2") as g2, broker.gateway("G1") as g1:
        await cloud.subscribe(f"{T.prefix}/gw/+/up/state", qos=1)
        await g2.subscribe(f"{T.prefix}/gw/G2/down/#", qos=1)
        await g1.subscribe(f"{T.prefix}/gw/G1/down/#", qos=1)
        state_ok, g2_cfg_ok, g1_cfg_ok = token("g2-state"), token("g2-cfg"), token("g1-cfg")
        await g2.publish(T.up("G2", UpKind.STATE), state_ok, qos=1)
        await cloud.publish(T.down("G2", DownKind.CONFIG), g2_cfg_ok, qos=1)
        await cloud.publish(T.down("G1", DownKind.CONFIG), g1_cfg_ok, qos=1)
        later = [
            *await receive_until(cloud, state_ok),
            *await receive_until(g2, g2_cfg_ok),
            *await receive_until(g1, g1_cfg_ok),
        ]
    assert not bad & payloads(later), seen(later)


async def test_gateway_cannot_read_another_gateways_commands_or_uplink(broker: Broker) -> None:
    async with AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(broker.cloud())
        g2 = await stack.enter_async_context(broker.gateway("G2"))
        # Retained configs exist for both gateways before G1 subscribes.
        cfg_g1, cfg_g2 = token("retained-cfg-g1"), token("retained-cfg-g2")
        await cloud.publish(T.down("G1", DownKind.CONFIG), cfg_g1, qos=1, retain=True)
        await cloud.publish(T.down("G2", DownKind.CONFIG), cfg_g2, qos=1, retain=True)
        await g2.subscribe(T.down("G2", DownKind.CMD), qos=1)

        g1 = await stack.enter_async_context(broker.gateway("G1"))
        # Mosquitto 2.0 grants every SUBSCRIBE (its acl_file does not check filters); the
        # protection is the read check on each message delivered.
        for topic_filter in (
            T.down("G2", DownKind.CMD),
            f"{T.prefix}/gw/+/down/#",
            f"{T.prefix}/gw/G2/up/#",
            f"$share/steal/{T.prefix}/gw/+/down/#",
            "#",
        ):
            await g1.subscribe(topic_filter, qos=1)

        cmd_g2, up_g2 = token("cmd-for-g2"), token("g2-telemetry")
        await cloud.publish(T.down("G2", DownKind.CMD), cmd_g2, qos=1)
        await g2.publish(T.up("G2", UpKind.TELEMETRY), up_g2, qos=1)
        cmd_g1 = token("cmd-for-g1")  # positive control for G1
        await cloud.publish(T.down("G1", DownKind.CMD), cmd_g1, qos=1)

        at_g1 = await receive_until(g1, cmd_g1)
        at_g2 = await receive_until(g2, cmd_g2)

    assert cfg_g1 in payloads(at_g1), "G1 gets its own retained config"
    assert not {cfg_g2, cmd_g2, up_g2} & payloads(at_g1), seen(at_g1)
    own = f"{T.prefix}/gw/G1/"
    assert all(topic.startswith(own) for topic, _ in seen(at_g1)), seen(at_g1)
    assert cmd_g2 in payloads(at_g2), "the command to G2 was really sent"


async def test_another_gateways_client_id_gives_no_rights_and_does_not_kick_it(
    broker: Broker,
) -> None:
    async with AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(broker.cloud())
        await cloud.subscribe(T.all_up(), qos=1)
        g2 = await stack.enter_async_context(broker.gateway("G2", clean_session=False))
        await g2.subscribe(T.down("G2", DownKind.CMD), qos=1)

        # G1's credentials, G2's client id, a persistent session like the agent's.
        impostor = await stack.enter_async_context(
            broker.gateway("G1", identifier="G2", clean_session=False)
        )
        await impostor.subscribe(T.down("G2", DownKind.CMD), qos=1)
        await impostor.subscribe(T.down("G1", DownKind.CMD), qos=1)
        forged_up = token("impostor-as-g2-telemetry")
        await impostor.publish(T.up("G2", UpKind.TELEMETRY), forged_up, qos=1)
        own_up = token("impostor-own-telemetry")  # control: it still has G1's rights
        await impostor.publish(T.up("G1", UpKind.TELEMETRY), own_up, qos=1)

        cmd_g2, cmd_g1 = token("cmd-for-g2"), token("cmd-for-g1")
        await cloud.publish(T.down("G2", DownKind.CMD), cmd_g2, qos=1)
        await cloud.publish(T.down("G1", DownKind.CMD), cmd_g1, qos=1)

        at_impostor = await receive_until(impostor, cmd_g1)
        # The real G2 is still connected (not kicked off by a second "G2") and gets its
        # command; afterwards it can still publish.
        at_g2 = await receive_until(g2, cmd_g2)
        g2_up = token("g2-still-online")
        await g2.publish(T.up("G2", UpKind.TELEMETRY), g2_up, qos=1)
        at_cloud = await receive_until(cloud, own_up, g2_up)

    assert cmd_g2 not in payloads(at_impostor), seen(at_impostor)
    assert cmd_g2 in payloads(at_g2)
    assert forged_up not in payloads(at_cloud), seen(at_cloud)
    assert (T.up("G1", UpKind.TELEMETRY), own_up) in seen(at_cloud)
    assert (T.up("G2", UpKind.TELEMETRY), g2_up) in seen(at_cloud)


async def test_commands_queued_for_an_offline_gateway_cannot_be_taken_by_its_client_id(
    broker: Broker,
) -> None:
    # G1 has a persistent session subscribed to its commands, then goes offline.
    async with broker.gateway("G1", clean_session=False) as g1:
        await g1.subscribe(T.down("G1", DownKind.CMD), qos=1)
    queued = token("queued-for-g1")
    async with broker.cloud() as cloud:
        await cloud.publish(T.down("G1", DownKind.CMD), queued, qos=1)

        # G2 resumes "G1"'s session by client id.
        async with broker.gateway("G2", identifier="G1", clean_session=False) as impostor:
            await impostor.subscribe(T.down("G2", DownKind.CMD), qos=1)
            control = token("cmd-for-g2")
            await cloud.publish(T.down("G2", DownKind.CMD), control, qos=1)
            at_impostor = await receive_until(impostor, control)
    assert queued not in payloads(at_impostor), seen(at_impostor)

    # The real G1 comes back: its session, and the command queued in it, are intact.
    async with broker.gateway("G1", clean_session=False) as g1:
        at_g1 = await receive_until(g1, queued)
    assert (T.down("G1", DownKind.CMD), queued) in seen(at_g1)


REFUSED = [
    pytest.param("gateway", "G1", "wrong-password", id="gateway-wrong-password"),
    pytest.param("gateway", None, None, id="gateway-anonymous"),
    pytest.param("gateway", "G9", "whatever", id="gateway-unknown-user"),
    pytest.param("gateway", CLOUD, None, id="cloud-account-on-gateway-listener"),
    pytest.param("cloud", CLOUD, "wrong-password", id="cloud-wrong-password"),
    pytest.param("cloud", None, None, id="cloud-anonymous"),
    pytest.param("cloud", "G1", None, id="gateway-account-on-cloud-listener"),
]


@pytest.mark.parametrize(("listener", "user", "password"), REFUSED)
async def test_bad_credentials_are_refused(
    broker: Broker, listener: str, user: str | None, password: str | None
) -> None:
    if listener == "gateway":
        client = broker.gateway(user, password=password)
    else:
        client = broker.cloud(user=user, password=password)
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with client:
            pass
    assert _code(refused.value) in NOT_AUTHORIZED, refused.value
    # Positive control: the right credentials on the same listener are accepted.
    good = broker.gateway("G1") if listener == "gateway" else broker.cloud()
    async with good:
        pass


async def test_gateway_listener_requires_tls(broker: Broker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with broker.gateway("G1", tls=False, timeout=2):
            pass


async def test_cloud_shared_subscription_splits_the_uplink(broker: Broker) -> None:
    sent = [token(f"{gw}-batch-{i}") for gw in ("G1", "G2") for i in range(10)]
    async with AsyncExitStack() as stack:
        # Two ingest workers under the one cloud account, each with its own client id.
        workers = [
            await stack.enter_async_context(broker.cloud(f"ingest-{n}-{uuid.uuid4().hex[:6]}"))
            for n in range(2)
        ]
        for w in workers:
            await w.subscribe(T.all_up("ingest"), qos=1)
        for name in ("G1", "G2"):
            async with broker.gateway(name) as gateway:
                for payload in sent:
                    if payload.startswith(name.encode()):
                        await gateway.publish(T.up(name, UpKind.TELEMETRY), payload, qos=1)

        received: list[list[bytes]] = [[], []]
        done = asyncio.Event()

        async def drain(n: int) -> None:
            async for message in workers[n].messages:
                if body(message) in sent:
                    received[n].append(body(message))
                if set(received[0]) | set(received[1]) >= set(sent):
                    done.set()

        tasks = [asyncio.create_task(drain(n)) for n in range(2)]
        try:
            async with asyncio.timeout(10):
                await done.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    both = received[0] + received[1]
    assert sorted(both) == sorted(sent), "each message to exactly one worker"
    assert received[0] and received[1], "the group shares the load"


async def test_last_will_lands_only_on_the_gateways_own_state(broker: Broker) -> None:
    forged_will, own_will = token("g1-will-as-g2"), token("g1-will")
    async with broker.cloud() as cloud:
        await cloud.subscribe(f"{T.prefix}/gw/+/up/state", qos=1)
        # The broker accepts the CONNECT with a forbidden will; it is dropped when it fires.
        for topic, payload in (
            (T.up("G2", UpKind.STATE), forged_will),
            (T.up("G1", UpKind.STATE), own_will),
        ):
            client = broker.gateway("G1", will=aiomqtt.Will(topic, payload, qos=1, retain=True))
            with contextlib.suppress(aiomqtt.MqttError):
                async with client:
                    _drop_connection(client)
                    with contextlib.suppress(aiomqtt.MqttError):
                        async with asyncio.timeout(5):
                            async for _ in client.messages:
                                pass
        live = await receive_until(cloud, own_will)
    assert (T.up("G1", UpKind.STATE), own_will) in seen(live)
    assert forged_will not in payloads(live), seen(live)

    # The own will was retained; the forged one was not.
    async with broker.cloud() as cloud, broker.gateway("G1") as g1:
        await cloud.subscribe(f"{T.prefix}/gw/+/up/state", qos=1)
        control = token("g1-state")
        await g1.publish(T.up("G1", UpKind.STATE), control, qos=1)
        later = await receive_until(cloud, control)
    retained = payloads([m for m in later if m.retain])
    assert own_will in retained
    assert forged_will not in payloads(later), seen(later)


async def test_revoked_gateway_is_disconnected_and_refused(tmp_path: Path) -> None:
    with run_broker(tmp_path) as b:  # its own broker: this test edits the password file
        async with b.cloud() as cloud, b.gateway("G1") as g1:
            await cloud.subscribe(T.all_up(), qos=1)
            async with b.gateway("G2") as g2:
                await asyncio.to_thread(b.revoke, "G2")
                # The live session of the revoked gateway is closed by the reload ...
                with pytest.raises(aiomqtt.MqttError):
                    async with asyncio.timeout(10):
                        async for _ in g2.messages:
                            pass
            # ... and it cannot come back,
            with pytest.raises(aiomqtt.MqttCodeError) as refused:
                async with b.gateway("G2"):
                    pass
            assert _code(refused.value) in NOT_AUTHORIZED
            # while the others carry on over the same connections.
            alive = token("g1-after-reload")
            await g1.publish(T.up("G1", UpKind.TELEMETRY), alive, qos=1)
            await receive_until(cloud, alive)
