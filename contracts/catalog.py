"""What a run knows of each tool it may govern, pinned at its start: the tool catalogue."""

from __future__ import annotations

from pydantic import BaseModel

from contracts.models import Effect, Tier


class CatalogEntry(BaseModel):
    """The part of a tool a workflow needs to govern a call, pinned in the run at its start."""

    name: str
    description: str
    tier: Tier
    effect: Effect
    compensation_tool: str | None = None
    irreversible: str | None = None
