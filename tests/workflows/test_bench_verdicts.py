"""The bench's verdict on a long run's histories: flat, shrinking with what they carry, or growing."""

from __future__ import annotations

from typing import Any

import pytest

from bench.run import long_run_verdict


def chain(sizes: list[int], carried: list[int]) -> list[dict[str, Any]]:
    """History runs that continued as new, then a last one that completed."""
    runs = [
        {"json_bytes": s, "carried_in_bytes": c, "last_event": "workflow_execution_continued_as_new"}
        for s, c in zip(sizes, carried, strict=True)
    ]
    return [
        *runs,
        {"json_bytes": 40_000, "carried_in_bytes": carried[-1], "last_event": "workflow_execution_completed"},
    ]


@pytest.mark.parametrize(
    ("sizes", "carried", "verdict"),
    [
        ([1_000_000, 1_000_500, 1_000_200, 1_000_400, 1_000_100], [30_000] * 5, "FLAT, from history run #1 on"),
        (
            [1_700_000, 1_500_000, 1_300_000, 1_100_000, 900_000],
            [290_000, 230_000, 170_000, 110_000, 50_000],
            "SHRINKING",
        ),
        ([900_000, 1_000_000, 1_100_000, 1_200_000, 1_300_000], [30_000, 40_000, 50_000, 60_000, 70_000], "GROWING"),
    ],
)
def test_a_long_runs_histories_are_judged_by_how_they_change(
    sizes: list[int], carried: list[int], verdict: str
) -> None:
    first_line = long_run_verdict(chain(sizes, carried), steps_per_history=200)[0]
    assert f"): {verdict}" in first_line
