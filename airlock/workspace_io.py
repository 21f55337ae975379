"""Moved to `contracts.workspace_io`; this path keeps working with a DeprecationWarning."""

from runtime.moved import moved

moved(__name__, "contracts.workspace_io")
