"""Moved to `runtime.settings`; this path keeps working with a DeprecationWarning."""

from runtime.moved import moved

moved(__name__, "runtime.settings")
