"""The bench's verdict on the policy engine's target: each shipped policy's p50 under 20 us."""

from __future__ import annotations

from typing import Any

from bench.policy_timing import target_line


def figures(
    job_p50s: list[float], pooled: dict[str, float], cases: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Any]]:
    job = {"kinds": {f"kind{i}": {"decide_us": (p50, p50 * 2)} for i, p50 in enumerate(job_p50s)}}
    examples = {
        "pooled": {name: (p50, p50 * 2) for name, p50 in pooled.items()},
        "policies": {"messaging-example.yaml": {label: {"decide_us": (p50, p50 * 2)} for label, p50 in cases.items()}},
    }
    return job, examples


def test_every_policy_under_the_target_is_met_and_a_slow_single_call_is_named() -> None:
    line = target_line(*figures([6.0, 9.0, 7.5], {"banking-example.yaml": 11.0, "messaging-example.yaml": 10.6},
                                {"a short post": 8.0, "a long post": 36.4}))  # fmt: skip
    assert "example.yaml (its slowest call) 9.0" in line
    assert "banking-example.yaml 11.0, messaging-example.yaml 10.6; met." in line
    assert "Single calls at or above 20 us p50: 'a long post' 36.4." in line
    assert "a short post" not in line


def test_a_policy_at_the_target_is_not_met() -> None:
    line = target_line(*figures([6.0], {"banking-example.yaml": 20.0}, {"a post": 8.0}))
    assert line.endswith("NOT met.")
    assert "Single calls" not in line


def test_the_job_policy_alone_over_the_target_is_not_met() -> None:
    assert "NOT met." in target_line(*figures([6.0, 21.0], {"banking-example.yaml": 11.0}, {}))
