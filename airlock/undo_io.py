"""Moved to `contracts.undo_io`; this path keeps working with a DeprecationWarning."""

from runtime.moved import moved

moved(__name__, "contracts.undo_io")
