"""Moved to `recorder.flight_recorder`; this path keeps working with a DeprecationWarning."""

from runtime.moved import moved

moved(__name__, "recorder.flight_recorder")
