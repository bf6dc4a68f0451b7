"""Which instance gets a call (bridge/gateway/balance.py) and the breakers that take a
failing one out (breaker.py): least in flight, ties in turn, sticky sessions, an ejected
instance skipped until its half-open trial, longer each time it fails again."""

from __future__ import annotations

import pytest

from bridge.gateway.balance import Balancer, NoInstance
from bridge.gateway.breaker import BASE_EJECTION, CONSECUTIVE, State

AB = ["a", "b"]


def test_fewest_in_flight_wins_and_ties_go_in_turn() -> None:
    balance = Balancer()
    first = [balance.choose("s", AB, 0) for _ in range(2)]
    assert sorted(first) == AB  # one each: the second went to the one with fewer
    for instance in first:
        balance.done(instance, 0, ok=True)
    spread = []
    for _ in range(4):  # one call at a time: ties every time, taken in turn
        chosen = balance.choose("s", AB, 0)
        spread.append(chosen)
        balance.done(chosen, 0, ok=True)
    assert sorted(spread) == ["a", "a", "b", "b"]
    assert not balance.in_flight


def test_a_session_sticks_to_its_instance_while_it_takes_calls() -> None:
    balance = Balancer()
    for _ in range(3):
        assert balance.choose("s", AB, 0, sticky="b") == "b"
    assert balance.choose("s", ["a"], 0, sticky="b") == "a"  # b gone from Consul


def test_failures_in_a_row_eject_and_the_half_open_trial_decides() -> None:
    balance = Balancer()
    for n in range(CONSECUTIVE):
        assert balance.choose("s", ["a"], 0) == "a"
        assert balance.done("a", 0, ok=False) is (n == CONSECUTIVE - 1)
    assert balance.breakers["a"].state is State.OPEN
    assert balance.choose("s", AB, 1) == "b"
    with pytest.raises(NoInstance, match="ejected after failing calls"):
        balance.choose("s", ["a"], 1)
    later = BASE_EJECTION + 1
    assert balance.choose("s", ["a"], later) == "a"  # the one trial
    with pytest.raises(NoInstance):
        balance.choose("s", ["a"], later)  # no second call while the trial runs
    assert balance.done("a", later, ok=False) is True  # failed: out again, for longer
    assert balance.breakers["a"].open_until == later + 2 * BASE_EJECTION
    again = later + 2 * BASE_EJECTION
    assert balance.choose("s", ["a"], again) == "a"
    balance.done("a", again, ok=True)
    assert balance.breakers["a"].state is State.CLOSED


def test_the_ejection_time_is_the_settings_and_grows_to_ten_times_it() -> None:
    balance, now = Balancer(ejection=2.0), 0.0
    outs = []
    for _ in range(12):
        while balance.breakers["a"].state is not State.OPEN:
            balance.choose("s", ["a"], now)
            balance.done("a", now, ok=False)
        outs.append(balance.breakers["a"].open_until - now)
        now = balance.breakers["a"].open_until
        balance.breakers["a"].allows(now)  # half-open: its trial fails below
    assert outs == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 20.0, 20.0]


def test_a_success_resets_the_count_and_tried_instances_are_excluded() -> None:
    balance = Balancer()
    for _ in range(3):
        for ok in [False] * (CONSECUTIVE - 1) + [True]:
            balance.choose("s", ["a"], 0)
            balance.done("a", 0, ok=ok)
    assert balance.breakers["a"].state is State.CLOSED
    assert balance.choose("s", AB, 0, exclude={"a"}) == "b"
    with pytest.raises(NoInstance, match="failed to take the call: a, b"):
        balance.choose("s", AB, 0, exclude=["a", "b"])
    with pytest.raises(NoInstance, match="no healthy instance of s"):
        balance.choose("s", [], 0)


def test_a_request_state_goes_back_to_its_instance_or_fails() -> None:
    balance = Balancer()
    assert balance.pinned("b", AB, 0) == "b" and balance.in_flight["b"] == 1
    with pytest.raises(NoInstance, match="is gone"):
        balance.pinned("c", AB, 0)
