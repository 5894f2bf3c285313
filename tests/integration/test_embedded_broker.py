"""The embedded broker (amqtt) behaves like Mosquitto where the system relies on it:
retained messages reach the subscriptions that match them, and only those."""

from __future__ import annotations

import asyncio

import aiomqtt

from cloud.embedded import EmbeddedBroker


async def _first(client: aiomqtt.Client, seconds: float) -> aiomqtt.Message | None:
    try:
        async with asyncio.timeout(seconds):
            return await anext(client.messages)
    except TimeoutError:
        return None


async def test_a_new_client_gets_only_the_retained_messages_it_subscribed_to() -> None:
    broker = EmbeddedBroker()
    await broker.start()
    try:
        port = broker.port
        async with (
            aiomqtt.Client("127.0.0.1", port, identifier="consumer") as consumer,
            aiomqtt.Client("127.0.0.1", port, identifier="gateway") as gateway,
        ):
            await consumer.subscribe("p/gw/+/up/+", qos=1)  # the ingest's wildcard
            await gateway.publish("p/gw/g1/up/state", b"online", qos=1, retain=True)
            assert (m := await _first(consumer, 2)) is not None and m.payload == b"online"
            async with aiomqtt.Client("127.0.0.1", port, identifier="acks") as acks:
                await acks.subscribe("p/gw/g1/up/ack", qos=1)
                # amqtt 0.12.1 sent this client the retained state matching the consumer's
                # filter; it must get nothing
                assert await _first(acks, 1) is None
            async with aiomqtt.Client("127.0.0.1", port, identifier="watcher") as watcher:
                await watcher.subscribe("p/gw/+/up/state", qos=1)
                got = await _first(watcher, 2)
                assert got is not None and got.retain and got.payload == b"online"
    finally:
        await broker.stop()
