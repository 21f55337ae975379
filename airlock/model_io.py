"""Moved to `contracts.model_io`; this path keeps working with a DeprecationWarning."""

from runtime.moved import moved

moved(__name__, "contracts.model_io")
