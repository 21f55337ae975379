"""Connecting to Temporal, shared by the worker, `airlock dev` and every `airlock` command: a
server that does not answer is said in one line naming the address, within a bounded time."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from runtime.converter import data_converter
from runtime.exits import TemporalUnreachable
from runtime.settings import Settings
from runtime.tracing import configure_telemetry

# A listener that accepts the connection but never speaks gRPC would hold the SDK for 30 s; a
# Temporal server on this machine or its network answers in well under a second.
CONNECT_TIMEOUT_S = 5.0


async def connect_client(settings: Settings, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Client:
    """A client of `settings`' server and namespace, with Airlock's data converter and telemetry;
    `TemporalUnreachable` when nothing answers there within `timeout_s`."""
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.temporal_address,
                namespace=settings.namespace,
                data_converter=data_converter,
                # Spans for workflows and activities, replay-safe; OTLP export when the environment asks.
                plugins=[configure_telemetry().plugin()],
            ),
            timeout_s,
        )
    except TimeoutError:
        raise TemporalUnreachable(unreachable(settings.temporal_address, f"no answer within {timeout_s:g} s")) from None
    except RuntimeError as e:
        raise TemporalUnreachable(unreachable(settings.temporal_address, _reason(str(e)))) from None


def unreachable(address: str, reason: str) -> str:
    return f"cannot reach Temporal at {address}: {reason} (is the server running? TEMPORAL_ADDRESS sets the address)"


def _reason(text: str) -> str:
    """The SDK's connect error in a few words: its text is a nested dump of Rust errors."""
    lowered = text.lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("timeout expired", "no answer"),
        ("timed out", "no answer"),
        ("dns error", "the host name does not resolve"),
        ("failed to lookup address", "the host name does not resolve"),
        ("invalid uri", "not a host:port address"),
        ("connection reset", "the connection was reset (not a Temporal server?)"),
        ("broken pipe", "the connection was closed (not a Temporal server?)"),
        ("h2 protocol error", "it does not speak gRPC (not a Temporal server?)"),
    ):
        if needle in lowered:
            return reason
    return text.removeprefix("Failed client connect: ").splitlines()[0][:200]
