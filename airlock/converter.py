"""Airlock's data converter: Temporal's pydantic JSON converter, with its type adapters built once
per process.

The SDK makes a new payload converter for every serialization context (each activity a workflow
schedules, each result it decodes), and each new pydantic converter starts with an empty cache of
type adapters. A type adapter for a union (`Prepared | Rejected`) is built by generating its
schema: done for every payload, that was a third of a workflow activation's time. The payloads
themselves are byte for byte those of `temporalio.contrib.pydantic.pydantic_data_converter`.
"""

from __future__ import annotations

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


data_converter = DataConverter(payload_converter_class=AirlockPayloadConverter)
