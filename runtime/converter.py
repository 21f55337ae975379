"""Airlock's data converter: Temporal's pydantic JSON converter, with its type adapters built once
per process.

The SDK makes a new payload converter for every serialization context (each activity a workflow
schedules, each result it decodes), and each new pydantic converter starts with an empty cache of
type adapters. A type adapter for a union (`Prepared | Rejected`) is built by generating its
schema: done for every payload, that was a third of a workflow activation's time. The payloads
themselves are byte for byte those of `temporalio.contrib.pydantic.pydantic_data_converter`.

One difference in decoding: a payload decoded without a type hint that no converter can read (an
unknown encoding, bytes that are not JSON, a protobuf of an unknown message type) comes back as a
`RawValue` instead of raising. Temporal decodes a handler's `*args` and a run's `*args` without
type hints, before any workflow code runs; raising there fails the workflow task, and Temporal
retries that task forever. Handed over raw, the payload reaches the workflow, which refuses it by
name (`workflows.entry`). Decoding with a type hint, as every activity result is decoded, is
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)

# Stateless apart from its cache of type adapters, which is thread-safe (functools.lru_cache).
_JSON = PydanticJSONPlainPayloadConverter()


class AirlockPayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(
            *(
                _JSON if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )

    def from_payloads(self, payloads: Sequence[Payload], type_hints: list[type] | None = None) -> list[Any]:
        if type_hints:
            return super().from_payloads(payloads, type_hints)
        values: list[Any] = []
        for payload in payloads:
            try:
                [value] = super().from_payloads([payload])
            except Exception:
                value = RawValue(payload)
            values.append(value)
        return values


data_converter = DataConverter(payload_converter_class=AirlockPayloadConverter)
