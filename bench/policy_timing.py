"""Figure 3: how long `policy.engine` takes on the shipped policy, per call.

Each call is timed on its own (perf_counter_ns around one decision), after a warm-up, for the
three calls of the job. "as in a step" adds what `GovernedRun._govern` does around the decision:
building the `CallContext` and copying it with the previewed arguments and facts.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import CALLS, percentile
from contracts.models import Mode

# From the submodules: after workflow code has run in the sandbox, the package attribute
# `policy.engine` can be the submodule rather than the function.
from policy.engine import CallContext, decide
from policy.loader import load_policy
from runtime.settings import Settings
from tools.registry import load_registry

FACTS = {"read": {}, "write": {"refundable_usd": "950.00"}, "denied": {"refundable_usd": "950.00"}}


def _contexts() -> tuple[Any, dict[str, dict[str, Any]]]:
    settings = Settings()
    policy = load_policy(settings.policy_path)
    catalog = {e.name: e for e in load_registry(settings.tool_module_list).catalog()}
    specs: dict[str, dict[str, Any]] = {}
    for kind, call in CALLS.items():
        entry = catalog[call["tool"]]
        specs[kind] = {
            "base": dict(
                workspace="acme",
                agent="support",
                requested_by="u_alice",
                mode=Mode.APPROVE,
                tool=call["tool"],
                effect=entry.effect,
                tier=entry.tier,
                args=call["args"],
            ),
            "facts": FACTS[kind],
        }
    return policy, specs


def measure(iterations: int) -> dict[str, Any]:
    policy, specs = _contexts()
    out: dict[str, Any] = {"iterations": iterations, "kinds": {}}
    clock = time.perf_counter_ns
    # What the clock itself costs, to read the figures against.
    overhead = []
    for _ in range(iterations):
        a = clock()
        overhead.append(clock() - a)
    out["clock_overhead_ns_p50"] = percentile(overhead, 50)
    for kind, spec in specs.items():
        ctx = CallContext(**spec["base"]).model_copy(update={"facts": spec["facts"]})
        decision = decide(policy, ctx)
        for _ in range(min(2000, iterations)):  # warm-up
            decide(policy, ctx)
        alone: list[int] = []
        for _ in range(iterations):
            a = clock()
            decide(policy, ctx)
            alone.append(clock() - a)
        in_step: list[int] = []
        for _ in range(iterations):
            a = clock()
            c = CallContext(**spec["base"])
            decide(policy, c.model_copy(update={"args": spec["base"]["args"], "facts": spec["facts"]}))
            in_step.append(clock() - a)
        out["kinds"][kind] = {
            "outcome": f"{decision.outcome.value} ({decision.rule})",
            "decide_us": (percentile(alone, 50) / 1000, percentile(alone, 99) / 1000),
            "in_step_us": (percentile(in_step, 50) / 1000, percentile(in_step, 99) / 1000),
        }
    return out
