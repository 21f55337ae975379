"""Import paths of modules that moved to their layer's package keep working for a while: the old
module name is bound to the new module (the same classes, so isinstance and pydantic agree), with a
DeprecationWarning naming where it lives now. See docs/contract.md, "Migration notes"."""

from __future__ import annotations

import importlib
import sys
import warnings


def moved(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
