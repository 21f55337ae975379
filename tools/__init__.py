"""Tools an agent can call: a registry keyed by name, and the shipped demo back office."""

from tools.base import Preview, Tool, ToolContext, ToolError
from tools.registry import ToolRegistry, load_registry

__all__ = ["Preview", "Tool", "ToolContext", "ToolError", "ToolRegistry", "load_registry"]
