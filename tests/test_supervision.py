"""The supervisor's decisions, without processes: worker counts, restarts and giving up,
signals, the drain deadline, the exit status."""

from __future__ import annotations

import signal

import pytest

from gateway.config.schema import ServerConfig
from gateway.supervision import (
    EXIT_MARGIN,
    WORKER_SIGNAL,
    Action,
    GiveUp,
    Phase,
    Restart,
    RestartPolicy,
    after_crash,
    clean_stop,
    describe_exit,
    drain_deadline,
    exit_status,
    on_signal,
    parse_workers,
    resolve_workers,
)

POLICY = RestartPolicy(base_delay=0.1, max_delay=1.0, window=60.0, max_crashes=5)


@pytest.mark.parametrize(
    ("setting", "cpus", "expected"),
    [(1, 8, 1), (3, 8, 3), (3, None, 3), ("auto", 8, 8), ("auto", 1, 1), ("auto", None, 1)],
)
def test_resolve_workers(setting: int | str, cpus: int | None, expected: int) -> None:
    assert resolve_workers(setting, cpus) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("4", 4), ("auto", "auto")])
def test_parse_workers(text: str, expected: object) -> None:
    assert parse_workers(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "must be >= 1, got 0"),
        ("-2", "must be >= 1, got -2"),
        ("two", "expected an int >= 1 or 'auto', got 'two'"),
        ("AUTO", "expected an int >= 1 or 'auto', got 'AUTO'"),
        ("1.5", "expected an int >= 1 or 'auto', got '1.5'"),
        ("", "expected an int >= 1 or 'auto', got ''"),
    ],
)
def test_parse_workers_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(") + "$"):
        parse_workers(text)


def test_first_crash_restarts_after_the_base_delay() -> None:
    assert after_crash((), 100.0, POLICY) == Restart(0.1, (100.0,))


def test_back_off_doubles_per_crash_in_the_window_up_to_the_cap() -> None:
    policy = RestartPolicy(base_delay=0.1, max_delay=0.3, window=60.0, max_crashes=10)
    crashes: tuple[float, ...] = ()
    delays = []
    for now in (1.0, 2.0, 3.0, 4.0, 5.0):
        decision = after_crash(crashes, now, policy)
        assert isinstance(decision, Restart)
        delays.append(decision.delay)
        crashes = decision.crashes
    assert delays == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    assert crashes == (1.0, 2.0, 3.0, 4.0, 5.0)


def test_gives_up_at_max_crashes_within_the_window() -> None:
    decision = after_crash((10.0, 11.0, 12.0, 13.0), 14.5, POLICY)
    assert decision == GiveUp((10.0, 11.0, 12.0, 13.0, 14.5))
    assert isinstance(decision, GiveUp)
    assert decision.describe() == "5 crashes in 4.5s"


def test_one_crash_short_of_the_budget_still_restarts() -> None:
    decision = after_crash((10.0, 11.0, 12.0), 13.0, POLICY)
    assert isinstance(decision, Restart)
    assert decision.delay == pytest.approx(0.8)


def test_crashes_older_than_the_window_are_forgiven() -> None:
    # Four crashes long ago, then a worker that ran for more than the window: a fresh start.
    decision = after_crash((0.0, 1.0, 2.0, 3.0), 64.0, POLICY)
    assert decision == Restart(0.1, (64.0,))
    # Only the crashes inside the window count towards the budget and the delay.
    decision = after_crash((0.0, 1.0, 30.0, 40.0), 61.0, POLICY)
    assert decision == Restart(0.4, (30.0, 40.0, 61.0))


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        (0, "exited with status 0"),
        (3, "exited with status 3"),
        (-9, "killed by SIGKILL"),
        (-11, "killed by SIGSEGV"),
        (-15, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_exit(returncode: int, text: str) -> None:
    assert describe_exit(returncode) == text


@pytest.mark.parametrize(
    ("phase", "signum", "after", "action"),
    [
        (Phase.RUNNING, signal.SIGTERM, Phase.DRAINING, Action.DRAIN),
        (Phase.RUNNING, signal.SIGINT, Phase.DRAINING, Action.DRAIN),
        (Phase.DRAINING, signal.SIGTERM, Phase.STOPPING, Action.STOP_NOW),
        (Phase.DRAINING, signal.SIGINT, Phase.STOPPING, Action.STOP_NOW),
        (Phase.STOPPING, signal.SIGTERM, Phase.STOPPING, Action.IGNORE),
        (Phase.RUNNING, signal.SIGHUP, Phase.RUNNING, Action.IGNORE),
    ],
)
def test_on_signal(phase: Phase, signum: int, after: Phase, action: Action) -> None:
    assert on_signal(phase, signum) == (after, action)


def test_workers_are_told_to_drain_with_sigterm_and_to_stop_with_another_signal() -> None:
    # A worker treats repeated SIGTERMs as one drain (an init system may signal it directly
    # as well as through the supervisor), so "stop now" must not be SIGTERM or SIGINT.
    assert WORKER_SIGNAL[Action.DRAIN] == signal.SIGTERM
    assert WORKER_SIGNAL[Action.STOP_NOW] not in (signal.SIGTERM, signal.SIGINT)


def test_drain_deadline_covers_the_drain_delay_and_the_shutdown_grace() -> None:
    server = ServerConfig(drain_delay=1.5, shutdown_timeout=10.0)
    assert drain_deadline(server) == pytest.approx(11.5 + EXIT_MARGIN)


@pytest.mark.parametrize(
    ("returncode", "clean"),
    [(0, True), (-15, True), (-3, True), (1, False), (-9, False), (-11, False)],
)
def test_clean_stop(returncode: int, clean: bool) -> None:
    assert clean_stop(returncode) is clean


def test_exit_status() -> None:
    assert exit_status(False, [0, 0, -15], 0) == 0
    assert exit_status(False, [], 0) == 0
    assert exit_status(True, [0, 0], 0) == 1  # gave up after repeated crashes
    assert exit_status(False, [0, 1], 0) == 1  # a worker failed its drain
    assert exit_status(False, [0, -9], 1) == 1  # a worker was killed at the deadline
