"""gateway.ws.attendant: one timer task for every connection of the run."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import trio
import trio.testing

from gateway.ws import attendant


class Recorder:
    def __init__(self, log: list[tuple[str, float, float]], name: str) -> None:
        self.log = log
        self.name = name

    def _on_timer(self, when: float) -> None:
        self.log.append((self.name, when, trio.current_time()))


async def test_calls_run_at_their_time_in_order(autojump_clock: trio.abc.Clock) -> None:
    calls: list[tuple[str, float, float]] = []
    a, b = Recorder(calls, "a"), Recorder(calls, "b")
    now = trio.current_time()
    attendant.call_at(now + 5, a)
    attendant.call_at(now + 1, b)
    attendant.call_at(now + 5, b)  # a tie runs in the order asked
    await trio.sleep(2)
    attendant.call_at(now + 3, a)  # earlier than what the attendant sleeps towards
    await trio.sleep(10)
    assert [(name, when - now) for name, when, _ in calls] == [
        ("b", 1),
        ("a", 3),
        ("a", 5),
        ("b", 5),
    ]
    assert all(at == when for _, when, at in calls)  # never early, never late (virtual)


async def test_one_attendant_per_run() -> None:
    assert attendant.attendant() is attendant.attendant()


async def test_a_dropped_target_is_not_kept_alive(autojump_clock: trio.abc.Clock) -> None:
    calls: list[tuple[str, float, float]] = []
    target = Recorder(calls, "gone")
    attendant.call_at(trio.current_time() + 1, target)
    del target
    gc.collect()
    await trio.sleep(2)
    assert calls == []


async def test_a_failing_callback_is_logged_and_the_rest_still_run(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def _on_timer(self, when: float) -> None:
            raise RuntimeError("boom")

    calls: list[tuple[str, float, float]] = []
    broken, fine = Broken(), Recorder(calls, "fine")
    with caplog.at_level(logging.ERROR, logger="gateway.ws"):
        attendant.call_at(trio.current_time() + 1, broken)
        attendant.call_at(trio.current_time() + 1, fine)
        await trio.sleep(2)
    assert [name for name, _, _ in calls] == ["fine"]
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)


async def test_the_last_target_called_is_not_kept_alive(autojump_clock: trio.abc.Clock) -> None:
    calls: list[tuple[str, float, float]] = []
    target = Recorder(calls, "called")
    alive = weakref.ref(target)
    attendant.call_at(trio.current_time() + 1, target)
    await trio.sleep(2)  # called; the attendant sleeps again
    assert len(calls) == 1
    del target
    gc.collect()
    assert alive() is None


async def test_entries_of_targets_that_are_gone_are_swept() -> None:
    current = attendant.attendant()
    far = trio.current_time() + 3600
    for _ in range(5000):  # short-lived connections, each with a keepalive far ahead
        attendant.call_at(far, Recorder([], "short"))
    kept = Recorder([], "kept")
    attendant.call_at(far, kept)
    assert len(current) < 2100  # swept as it grew: not 5001
