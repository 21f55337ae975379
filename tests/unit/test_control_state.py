"""The workspace control workflow's checkpoint stays under Temporal's payload limit
(`workflows.control_state.fit_checkpoint`): what only explains the past goes first, then the
oldest tracked runs; open spend reservations and the switches are never left out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter

from contracts.activity_io import RunContext
from contracts.workspace_io import DaySpend, Switches
from policy.loader import load_policy
from runtime.settings import EXAMPLE_POLICY
from tools.registry import load_registry
from workflows.control_state import (
    CHECKPOINT_BYTES,
    OTHER_RUNS,
    ControlState,
    Reservation,
    fit_checkpoint,
    json_bytes,
    size,
)
from workflows.workspace_control import (
    NAMES_PER_DAY_KEPT,
    REFUSAL_CHARS,
    REFUSALS_KEPT,
    REFUSED_RUNS_KEPT,
    RESERVATION_BYTES_OPEN,
    RESERVATIONS_OPEN,
    RUN_ID_BYTES_TRACKED,
    RUNS_PER_DAY_KEPT,
    RUNS_TRACKED,
)

POLICY = load_policy(EXAMPLE_POLICY)
CONTEXT = RunContext(policy=POLICY, policy_hash=POLICY.content_hash(), catalog=load_registry().catalog())
START = datetime(2026, 12, 1, tzinfo=UTC)


def state(**update: object) -> ControlState:
    base = ControlState(workspace="acme", context=CONTEXT, switches=Switches(generation=3, paused=True, by="u_carol"))
    return base.model_copy(update=update)


def tracked(count: int, id_chars: int = 20) -> dict[str, object]:
    ids = [f"run-{i:06d}-".ljust(id_chars, "x") for i in range(count)]
    return {
        "runs": dict.fromkeys(ids, 3),
        "registered_at": {r: START + timedelta(seconds=i) for i, r in enumerate(ids)},
        "signing_off": set(ids[: count // 2]),
    }


RESERVATIONS = {
    f"r-{i}": Reservation(run_id=f"run-{i}", agent="support", requested_by="u_alice", usd=0.01, day="2026-12-01")
    for i in range(100)
}


def test_a_checkpoint_that_fits_is_carried_whole() -> None:
    s = state(**tracked(100), reservations=RESERVATIONS)
    fitted, left_out = fit_checkpoint(s)
    assert (fitted, left_out) == (s, [])


def test_what_only_explains_the_past_goes_first() -> None:
    """Refused registrations and the spend ledger's lines by run, from long ids, make the state
    too large: they go (the day's total stays), the tracked runs and reservations stay."""
    refused = {f"{'k' * 2000}-{i}": "refused: the cap" for i in range(500)}
    ledger = DaySpend(day="2026-12-01", spent_usd=3.0, by_run={f"{'r' * 900}-{i}": 0.001 for i in range(2000)})
    s = state(**tracked(1000), reservations=RESERVATIONS, refused_runs=refused, days=[ledger])
    assert size(s) > CHECKPOINT_BYTES
    fitted, left_out = fit_checkpoint(s)
    assert size(fitted) <= CHECKPOINT_BYTES
    assert left_out == ["500 refused registrations", "2000 spend lines by run"]
    assert fitted.runs == s.runs and fitted.reservations == s.reservations and fitted.switches == s.switches
    assert fitted.days[0].spent_usd == 3.0 and list(fitted.days[0].by_run) == [OTHER_RUNS]
    assert s.refused_runs == refused  # the state the workflow goes on with is not changed


def test_then_the_oldest_tracked_runs_go_and_never_a_reservation() -> None:
    """Tracked runs alone past the limit: the oldest registrations are forgotten until it fits;
    every open reservation and the switches stay."""
    s = state(**tracked(3000, id_chars=1000), reservations=RESERVATIONS)
    assert size(s) > CHECKPOINT_BYTES
    fitted, left_out = fit_checkpoint(s)
    assert size(fitted) <= CHECKPOINT_BYTES
    [note] = left_out
    forgotten = int(note.split()[0])
    assert note == f"{forgotten} tracked runs" and 0 < forgotten < 3000
    kept = sorted(s.runs, key=lambda r: s.registered_at[r])[forgotten:]
    assert list(fitted.runs) == kept and set(fitted.registered_at) == set(kept)
    assert fitted.signing_off <= set(kept)
    assert fitted.reservations == s.reservations and fitted.switches == s.switches


def test_json_bytes_is_what_the_checkpoint_weighs() -> None:
    """The bounds count ids as the checkpoint's JSON writes them: UTF-8, quotes and backslashes
    escaped (text with control characters is refused where it comes in)."""
    for text in ["run-1", 'a"b\\c', "𝒜é　x", "'" * 10]:
        assert json_bytes(text) == len(TypeAdapter(str).dump_json(text)) - 2


def test_at_every_bound_the_checkpoint_fits_without_leaving_out_a_run() -> None:
    """Everything an insider can fill, filled to its bound with the heaviest printable text
    (4-byte characters, quotes): only what explains the past is left out; every tracked run, every
    open reservation and the switches are carried, under CHECKPOINT_BYTES."""
    heavy = "𝒜" * 11 + '"'  # 44 bytes of UTF-8 and an escaped quote
    per_run = RUN_ID_BYTES_TRACKED // RUNS_TRACKED
    ids = [f"{i:05d}" + heavy[: (per_run - 5 - 2) // 4] + '"' for i in range(RUNS_TRACKED)]
    assert sum(map(json_bytes, ids)) <= RUN_ID_BYTES_TRACKED
    runs = {
        "runs": dict.fromkeys(ids, 3),
        "registered_at": {r: START + timedelta(seconds=i) for i, r in enumerate(ids)},
        "signing_off": set(ids),
        "leaving": set(ids[:1000]),
    }
    per_reservation = RESERVATION_BYTES_OPEN // RESERVATIONS_OPEN - len("support") - len("u_alice")
    reservations = {
        f"{i:05d}{'𝒜' * ((per_reservation // 2 - 5) // 4)}": Reservation(
            run_id=f"{i:05d}{'𝒜' * ((per_reservation // 2 - 5) // 4)}",
            agent="support",
            requested_by="u_alice",
            usd=0.000001,
            day="2026-12-01",
        )
        for i in range(RESERVATIONS_OPEN)
    }
    assert sum(json_bytes(k) + json_bytes(r.run_id) + 14 for k, r in reservations.items()) <= RESERVATION_BYTES_OPEN
    long_key = "𝒜" * 2100
    s = state(
        **runs,
        reservations=reservations,
        refused_runs={f"{i}{long_key}": "r" * 200 for i in range(REFUSED_RUNS_KEPT)},
        refused=["𝒜" * REFUSAL_CHARS] * REFUSALS_KEPT,
        days=[
            DaySpend(
                day=f"2026-12-0{d}",
                by_run={f"{i}{'𝒜' * 250}": 0.001 for i in range(RUNS_PER_DAY_KEPT)},
                by_agent={f"{i}{'𝒜' * 250}": 0.001 for i in range(NAMES_PER_DAY_KEPT)},
                by_requester={f"{i}{'𝒜' * 250}": 0.001 for i in range(NAMES_PER_DAY_KEPT)},
            )
            for d in range(1, 8)
        ],
    )
    assert size(s) > CHECKPOINT_BYTES
    fitted, left_out = fit_checkpoint(s)
    assert size(fitted) <= CHECKPOINT_BYTES, left_out
    assert not any("tracked runs" in note for note in left_out), left_out
    assert fitted.runs == s.runs and fitted.signing_off == s.signing_off
    assert fitted.reservations == s.reservations and fitted.switches == s.switches
