"""The import paths a team's own tool module relies on, and the layering the code keeps."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_tool_api_has_one_import_home() -> None:
    """Everything a tool module needs comes from the package `tools`, the same objects as where
    they are defined."""
    import contracts.models
    import tools
    import tools.base
    import tools.secrets

    assert tools.Tool is tools.base.Tool and tools.ToolArgs is tools.base.ToolArgs
    assert tools.FieldChange is contracts.models.FieldChange and tools.Effect is contracts.models.Effect
    assert tools.Secret is tools.secrets.Secret
    assert {
        "Tool",
        "ToolArgs",
        "ToolOutput",
        "ToolContext",
        "Preview",
        "Effect",
        "Tier",
        "FieldChange",
        "Compensation",
    } <= set(tools.__all__)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("airlock.models", "contracts.models"),
        ("airlock.activity_io", "contracts.activity_io"),
        ("airlock.settings", "runtime.settings"),
        ("airlock.recorder", "recorder.flight_recorder"),
        ("policy.model", "contracts.policy"),
        ("activities.undo_plan", "recorder.undo_plan"),
    ],
)
def test_a_moved_module_keeps_its_old_path_with_a_deprecation_warning(old: str, new: str) -> None:
    """An existing module importing an old path still gets the same classes, and is told where
    they live now."""
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_imports_point_down_the_layers() -> None:
    """No module imports a layer above its own, and workflow code imports only what the sandbox
    passes through (scripts/check_layers.py, also run by `make check`)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_layers.py"), str(ROOT)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip().endswith("imports point down the layers")
