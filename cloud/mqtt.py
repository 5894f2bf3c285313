"""The cloud's MQTT clients (aiomqtt, which wraps paho-mqtt)."""

from __future__ import annotations

import ssl

import aiomqtt

from contract.link import Client
from contract.mqtt import BrokerAddress


def client(url: str, identifier: str, *, clean_session: bool = True) -> aiomqtt.Client:
    """A client of the broker at ``url`` (:class:`contract.link.Client`)."""
    addr = BrokerAddress.parse(url)
    return Client(
        addr.host,
        addr.port,
        identifier=identifier,
        username=addr.username,
        password=addr.password,
        tls_context=ssl.create_default_context() if addr.tls else None,
        clean_session=clean_session,
        keepalive=30,
        timeout=10,
    )
