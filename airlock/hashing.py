"""Moved to `contracts.hashing`; this path keeps working with a DeprecationWarning."""

from runtime.moved import moved

moved(__name__, "contracts.hashing")
