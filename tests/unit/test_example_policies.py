"""The shipped example policies decide what their comments promise, on the calls the benchmark
times (`bench.policy_timing.EXAMPLE_CASES`): facts, all/any, regex, presence, URL and e-mail
domains, links in a long text."""

from __future__ import annotations

import pytest

from bench.policy_timing import EXAMPLE_CASES, Case, example_contexts
from contracts.policy import Policy
from policy.engine import CallContext, decide

LOADED = [(example.policy, *example_contexts(example)) for example in EXAMPLE_CASES]
CASES = [(policy, case, ctx) for _, policy, contexts in LOADED for case, ctx in contexts]
IDS = [f"{name}: {case.label}" for name, _, contexts in LOADED for case, _ in contexts]


@pytest.mark.parametrize(("policy", "case", "context"), CASES, ids=IDS)
def test_each_example_call_is_decided_as_its_policy_says(policy: Policy, case: Case, context: CallContext) -> None:
    """Each timed call gets the outcome and the rule its example policy names for it."""
    decision = decide(policy, context)
    assert (decision.outcome.value, decision.rule) == (case.outcome, case.rule)
