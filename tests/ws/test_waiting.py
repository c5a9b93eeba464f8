"""gateway.ws.waiting: the FIFO of parked tasks that replaces trio's ParkingLot."""

from __future__ import annotations

import trio
import trio.testing

from gateway.ws.waiting import Waiters


async def test_wake_is_first_in_first_out_and_wake_all_wakes_the_rest() -> None:
    waiters = Waiters()
    woken: list[int] = []

    async def wait(i: int) -> None:
        await waiters.wait()
        woken.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(wait, i)
            await trio.testing.wait_all_tasks_blocked()
        assert waiters
        waiters.wake()
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [0]
        waiters.wake()
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [0, 1]
        waiters.wake_all()  # (trio runs the tasks it wakes together in any order)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(woken) == [0, 1, 2, 3]
        assert not waiters


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    waiters = Waiters()
    woken: list[str] = []

    async def wait(name: str) -> None:
        await waiters.wait()
        woken.append(name)

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as doomed:
            doomed.start_soon(wait, "cancelled")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait, "kept")
            await trio.testing.wait_all_tasks_blocked()
            doomed.cancel_scope.cancel()
        waiters.wake()  # the cancelled task is gone: the next one is woken
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["kept"]
        assert not waiters


def test_waking_nobody_is_harmless() -> None:
    waiters = Waiters()
    waiters.wake()
    waiters.wake_all()
    assert not waiters
