"""Moved to `recorder.undo_plan`; this path keeps working with a DeprecationWarning."""

from runtime.moved import moved

moved(__name__, "recorder.undo_plan")
