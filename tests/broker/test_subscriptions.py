"""Subscription bookkeeping: membership drives what is wanted; the connection catches up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.broker import names
from gateway.broker.subscriptions import Route, Subscriptions

A, B = b"gw:g:chat:a", b"gw:g:chat:b"
RA, RB = Route("g", "chat", "a"), Route("g", "chat", "b")


def test_first_holder_subscribes_last_one_unsubscribes() -> None:
    subs = Subscriptions()
    assert subs.hold(A, RA) is True
    assert subs.hold(A, RA) is False
    assert subs.pending() == ([A], [])
    subs.subscribed([A])
    assert subs.in_sync
    assert subs.release(A) is False
    assert subs.pending() == ([], [])
    assert subs.release(A) is True
    assert subs.pending() == ([], [A])
    subs.unsubscribed([A])
    assert subs.in_sync
    assert subs.wanted == frozenset()


def test_release_without_hold_changes_nothing() -> None:
    subs = Subscriptions()
    assert subs.release(A) is False
    assert subs.pending() == ([], [])


def test_routes_only_for_wanted_channels() -> None:
    subs = Subscriptions()
    subs.hold(A, RA)
    assert subs.route(A) == RA
    assert subs.route(B) is None
    subs.release(A)
    assert subs.route(A) is None  # a late message on A is dropped


def test_a_lost_connection_makes_everything_pending_again() -> None:
    subs = Subscriptions()
    subs.hold(A, RA)
    subs.hold(B, RB)
    subs.subscribed([A, B])
    subs.lost()
    assert sorted(subs.pending()[0]) == [A, B]
    assert subs.active == frozenset()


def test_a_holder_returning_during_an_unsubscribe_is_resubscribed() -> None:
    subs = Subscriptions()
    subs.hold(A, RA)
    subs.subscribed([A])
    subs.release(A)
    _, to_unsub = subs.pending()
    assert to_unsub == [A]
    subs.hold(A, RA)  # comes back while the UNSUBSCRIBE is in flight
    subs.unsubscribed(to_unsub)
    assert subs.pending() == ([A], [])


def test_a_holder_leaving_during_a_subscribe_is_unsubscribed() -> None:
    subs = Subscriptions()
    subs.hold(A, RA)
    to_sub, _ = subs.pending()
    subs.release(A)  # leaves while the SUBSCRIBE is in flight
    subs.subscribed(to_sub)
    assert subs.pending() == ([], [A])


@given(st.lists(st.tuples(st.sampled_from(["hold", "release", "sync", "lose"]), st.integers(0, 3))))
def test_syncing_always_converges_to_the_held_channels(ops: list[tuple[str, int]]) -> None:
    subs = Subscriptions()
    held = [0, 0, 0, 0]
    channels = [bytes([i]) for i in range(4)]
    for op, i in ops:
        if op == "hold":
            subs.hold(channels[i], Route("g", "m", str(i)))
            held[i] += 1
        elif op == "release":
            subs.release(channels[i])
            held[i] = max(0, held[i] - 1)
        elif op == "sync":
            to_sub, to_unsub = subs.pending()
            subs.subscribed(to_sub)
            subs.unsubscribed(to_unsub)
        else:
            subs.lost()
        assert subs.wanted == {channels[i] for i in range(4) if held[i]}
    to_sub, to_unsub = subs.pending()
    subs.subscribed(to_sub)
    subs.unsubscribed(to_unsub)
    assert subs.in_sync
    assert subs.active == subs.wanted


def test_names_are_prefixed_and_unambiguous() -> None:
    assert names.channel("gw", Route("m", "chat")) == b"gw:m:chat"
    assert names.channel("gw", Route("g", "chat", "a:b")) == b"gw:g:chat:a:b"
    assert names.channel("gw", Route("u", "chat", "alice")) == b"gw:u:chat:alice"
    assert names.count_key("gw", Route("g", "chat", "a")) == b"gw:count:g:chat:a"
    assert names.node_key("gw", b"\x01\x02") == b"gw:node:0102"
    # a group and a user of the same name, on the same mount, are different channels
    assert names.channel("gw", Route("g", "c", "x")) != names.channel("gw", Route("u", "c", "x"))
    assert names.channel("gw", Route("g", "c", "\ud800")) == b"gw:g:c:\xed\xa0\x80"
