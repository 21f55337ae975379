"""Tools an agent can call, and the one import home of the API a team's own tool module uses:

    from tools import Effect, FieldChange, Preview, Tier, Tool, ToolArgs, ToolContext, ToolOutput

See docs/tools.md. The names below are the public API; where they are defined is not.
"""

from contracts.models import Compensation, Effect, FieldChange, Tier
from tools.base import Caller, Preview, Tool, ToolArgs, ToolContext, ToolError, ToolOutput
from tools.registry import ToolRegistry, load_registry
from tools.secrets import Secret, secret_change

__all__ = [
    "Caller",
    "Compensation",
    "Effect",
    "FieldChange",
    "Preview",
    "Secret",
    "Tier",
    "Tool",
    "ToolArgs",
    "ToolContext",
    "ToolError",
    "ToolOutput",
    "ToolRegistry",
    "load_registry",
    "secret_change",
]
