"""Moved to `contracts.policy`; this path keeps working with a DeprecationWarning."""

from runtime.moved import moved

moved(__name__, "contracts.policy")
