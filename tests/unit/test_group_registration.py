"""Joins of one workspace that arrive while a registration is on its way, or during a burst of
starts, go out together."""

from __future__ import annotations

import asyncio

import pytest

from activities.workspace import BATCH, Destination, GroupRegistration
from contracts.workspace_io import RegisterRequest, Switches

ACME: Destination = ("acme", "airlock")


def request(n: int, workspace: str = "acme") -> RegisterRequest:
    return RegisterRequest(workspace=workspace, run_id=f"run-{n}")


class Control:
    """Records what each registration carried; holds each one until released."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[Destination, list[str]]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def send(self, to: Destination, requests: list[RegisterRequest]) -> Switches:
        self.sent.append((to, [r.run_id for r in requests]))
        number = len(self.sent)
        await self.release.wait()
        if self.fail:
            raise RuntimeError("control workflow unreachable")
        return Switches(generation=number)  # tells the joins which registration carried them


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_join_goes_at_once_and_those_behind_it_go_together() -> None:
    control = Control()
    group = GroupRegistration(control.send)
    first = asyncio.create_task(group.join(ACME, request(1)))
    await settle()
    assert control.sent == [(ACME, ["run-1"])]  # nothing waited for company
    behind = [asyncio.create_task(group.join(ACME, request(n))) for n in (2, 3, 4)]
    other = asyncio.create_task(group.join(("globex", "airlock"), request(5, "globex")))
    await settle()
    assert control.sent[-1] == (("globex", "airlock"), ["run-5"])  # another workspace does not wait
    control.release.set()
    assert (await first).generation == 1
    assert {(await b).generation for b in behind} == {3}
    assert (await other).generation == 2
    assert control.sent == [(ACME, ["run-1"]), (("globex", "airlock"), ["run-5"]), (ACME, ["run-2", "run-3", "run-4"])]


async def test_a_failed_registration_fails_every_join_it_carried_and_the_next_one_is_sent_afresh() -> None:
    control = Control(fail=True)
    group = GroupRegistration(control.send)
    joins = [asyncio.create_task(group.join(ACME, request(n))) for n in (1, 2)]
    control.release.set()
    for j in joins:
        with pytest.raises(RuntimeError, match="unreachable"):
            await j
    control.fail = False
    assert (await group.join(ACME, request(3))).generation == 2


async def test_a_cancelled_join_is_not_sent_and_a_burst_is_split() -> None:
    control = Control()
    group = GroupRegistration(control.send)
    first = asyncio.create_task(group.join(ACME, request(0)))
    await settle()
    cancelled = asyncio.create_task(group.join(ACME, request(-1)))
    burst = [asyncio.create_task(group.join(ACME, request(n))) for n in range(1, BATCH + 2)]
    await settle()
    cancelled.cancel()
    control.release.set()
    await asyncio.gather(first, *burst)
    sizes = [len(ids) for _, ids in control.sent]
    assert sizes == [1, BATCH, 1]
    assert "run--1" not in {i for _, ids in control.sent for i in ids}


async def test_in_a_burst_a_registration_waits_a_moment_for_the_joins_behind_it() -> None:
    control = Control()
    control.release.set()
    group = GroupRegistration(control.send, linger_s=1.0)
    await group.join(ACME, request(1))
    second = asyncio.create_task(group.join(ACME, request(2)))
    await settle()
    assert control.sent == [(ACME, ["run-1"])]  # a registration went out just now: this one waits
    third = asyncio.create_task(group.join(ACME, request(3)))
    await asyncio.gather(second, third)
    assert control.sent == [(ACME, ["run-1"]), (ACME, ["run-2", "run-3"])]


async def test_after_a_quiet_spell_a_join_goes_at_once() -> None:
    control = Control()
    control.release.set()
    group = GroupRegistration(control.send, linger_s=60.0, burst_s=0.05)
    await group.join(ACME, request(1))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(group.join(ACME, request(2)), timeout=10)
    assert control.sent == [(ACME, ["run-1"]), (ACME, ["run-2"])]
