"""Tools found by name. Modules are named in configuration and each exposes `TOOLS`, and may
expose `create_schema(engine)`: the tables it keeps in the back-office database, which the worker
creates when it starts (idempotently, like `tools.backoffice.db.create_schema`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Engine

from contracts.catalog import CatalogEntry
from tools.base import Tool

DEFAULT_MODULES: tuple[str, ...] = ("tools.backoffice",)


SchemaSetup = Callable[[Engine], None]


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool[Any, Any]], schemas: Sequence[SchemaSetup] = ()) -> None:
        # What each tool module keeps in the database, created by the worker as it starts.
        self.schemas = list(schemas)
        self._tools: dict[str, Tool[Any, Any]] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"tool {tool.name!r} is defined twice")
            self._tools[tool.name] = tool

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool[Any, Any]]:
        return iter(self._tools.values())

    def get(self, name: str) -> Tool[Any, Any]:
        try:
            return self._tools[name]
        except KeyError:
            raise KeyError(f"unknown tool {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._tools)

    def catalog(self) -> list[CatalogEntry]:
        return [
            CatalogEntry(
                name=t.name,
                description=t.description,
                tier=t.tier,
                effect=t.effect,
                compensation_tool=t.compensation_tool,
                irreversible=t.irreversible,
                arguments=t.argument_kinds(),
                facts=t.fact_kinds(),
            )
            for t in self._tools.values()
        ]


def load_registry(modules: Sequence[str] = DEFAULT_MODULES) -> ToolRegistry:
    tools: list[Tool[Any, Any]] = []
    schemas: list[SchemaSetup] = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        found = getattr(module, "TOOLS", None)
        if not isinstance(found, list) or not all(isinstance(t, Tool) for t in found):
            raise ValueError(f"tool module {module_name!r} must define TOOLS: list[Tool]")
        tools.extend(found)
        setup = getattr(module, "create_schema", None)
        if setup is not None:
            if not callable(setup):
                raise ValueError(f"tool module {module_name!r}: create_schema must be a function of the engine")
            schemas.append(setup)
    return ToolRegistry(tools, schemas)
