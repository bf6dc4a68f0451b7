"""Consul's rate limiting (429), as docs/operations.md tells it ("Rate limiting (429)"):
the Retry-After read as seconds or as an HTTP-date and capped at 30 s; the same request
sent again only after it, every other request of the client held too; an exponential
backoff without it; three tries, then the pass fails (a passing fault, not a refusal).
Against a stub Consul on a real socket, with py-consul's own client, on a virtual clock
(tests/consul_stub.py): nothing here waits for real."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import consul.exceptions
import pytest

from bridge.consul.client import ConsulClient
from bridge.consul.http import (
    MAX_RETRY_AFTER,
    RateLimited,
    _retry_after,
    is_passing_fault,
)
from bridge.core.protocols import ConsulRejected, ConsulUnavailable
from tests.consul_stub import (
    LEADER_PATH,
    Answer,
    Client,
    StubConsul,
    VirtualTime,
    ask_leader,
    gaps,
    serving,
)

# Wed, 21 Oct 2015 07:28:00 GMT: "now" for the HTTP-dates below
EPOCH = 1_445_412_480.0

# ---- Retry-After ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),  # not RFC 9110's delay-seconds, but plain enough to honour
        ("30", 30.0),
    ],
)
def test_retry_after_in_seconds(header: str, seconds: float) -> None:
    assert _retry_after(header, now=EPOCH) == seconds


@pytest.mark.parametrize(
    "header",
    [
        "Wed, 21 Oct 2015 07:28:07 GMT",  # IMF-fixdate, what RFC 9110 wants sent
        "Wednesday, 21-Oct-15 07:28:07 GMT",  # the obsolete RFC 850 form
        "Wed Oct 21 07:28:07 2015",  # the obsolete asctime form (GMT by definition)
    ],
)
def test_retry_after_as_an_http_date_is_the_time_until_then(header: str) -> None:
    assert _retry_after(header, now=EPOCH) == pytest.approx(7.0)


def test_retry_after_as_an_http_date_from_the_wall_clock() -> None:
    header = email.utils.formatdate(time.time() + 10, usegmt=True)  # whole seconds
    assert 8.0 < (_retry_after(header) or 0.0) <= 10.0


@pytest.mark.parametrize(
    "header",
    [
        "Wed, 21 Oct 2015 07:27:59 GMT",
        "Tue, 20 Oct 2015 07:28:07 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
    ],
)
def test_retry_after_a_date_already_past_is_no_wait(header: str) -> None:
    assert _retry_after(header, now=EPOCH) == 0.0


@pytest.mark.parametrize(
    "header",
    [
        "31",
        "3600",
        "99999999999999999999999",
        "Wed, 21 Oct 2015 07:28:31 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ],
)
def test_retry_after_is_capped_at_thirty_seconds(header: str) -> None:
    assert MAX_RETRY_AFTER == 30.0  # docs/operations.md: "at most 30 s"
    assert _retry_after(header, now=EPOCH) == 30.0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "nan",
        "inf",
        "1e3",
        "2 s",
        "0x10",
        "Wed, 32 Oct 2015 07:28:07 GMT",
        "Wed, 21 Foo 2015 07:28:07 GMT",
    ],
)
def test_retry_after_that_cannot_be_read_is_none_so_the_client_backs_off(
    header: str | None,
) -> None:
    assert _retry_after(header, now=EPOCH) is None


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
async def stub(vt: VirtualTime) -> AsyncIterator[tuple[StubConsul, Client]]:
    """The stub, and a maker of clients of it on the virtual clock (closed afterwards)."""
    consul_stub = StubConsul(vt)
    made: list[ConsulClient] = []
    async with serving(consul_stub) as url:

        def client(**options: Any) -> ConsulClient:
            made.append(ConsulClient(url, "n1", sleep=vt.sleep, clock=vt.clock, **options))
            return made[-1]

        yield consul_stub, client
        for c in made:
            await c.close()


# ---- the retry loop -----------------------------------------------------------------------


async def test_the_same_request_goes_again_only_after_each_retry_after(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    result, tries = await ask_leader(stub, vt, [Answer.limited("2"), Answer.limited("5"), Answer()])
    assert result == "127.0.0.1:8300"
    # Exactly as long as Consul asked (the backoff's own 0.1 s and 0.2 s lie within it).
    assert gaps(tries) == [2.0, 5.0]


async def test_a_long_retry_after_is_waited_for_thirty_seconds_only(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    result, tries = await ask_leader(stub, vt, [Answer.limited("3600"), Answer()])
    assert result == "127.0.0.1:8300"
    assert gaps(tries) == [30.0]


async def test_a_retry_after_given_as_an_http_date_is_honoured(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    date = email.utils.formatdate(time.time() + 8, usegmt=True)  # 7 to 8 s from now
    result, tries = await ask_leader(stub, vt, [Answer.limited(date), Answer()])
    assert result == "127.0.0.1:8300"
    (gap,) = gaps(tries)
    assert 6.0 < gap <= 8.0


async def test_without_retry_after_it_backs_off_exponentially_and_gives_up_after_three_tries(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    error, tries = await ask_leader(stub, vt, [Answer.limited() for _ in range(10)])
    # Three tries, docs/operations.md; then the pass fails, and a later pass sends it again.
    assert len(tries) == 3
    assert gaps(tries) == [0.1, 0.2]
    assert isinstance(error, ConsulUnavailable), "a passing fault, not a refusal"
    assert isinstance(error.__cause__, RateLimited)
    assert "rate limited by Consul (RateLimited: 429 Too Many Requests" in str(error)
    assert "\n" not in str(error)


async def test_the_backoff_doubles_with_each_try(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    error, tries = await ask_leader(stub, vt, [Answer.limited() for _ in range(10)], attempts=6)
    assert isinstance(error, ConsulUnavailable)
    assert gaps(tries) == [0.1, 0.2, 0.4, 0.8, 1.0]  # at most 1 s


async def test_it_gives_up_after_three_tries_even_when_told_to_wait(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    error, tries = await ask_leader(stub, vt, [Answer.limited("1") for _ in range(10)])
    assert isinstance(error, ConsulUnavailable)
    assert gaps(tries) == [1.0, 1.0]


async def test_an_unreadable_retry_after_is_backed_off_as_if_absent(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    result, tries = await ask_leader(
        stub, vt, [Answer.limited("soon"), Answer.limited("-1"), Answer()]
    )
    assert result == "127.0.0.1:8300"
    assert gaps(tries) == [0.1, 0.2]


async def test_a_retry_after_holds_every_request_of_the_client(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    consul_stub, client = stub
    consul = client(attempts=1)
    consul_stub.script[LEADER_PATH] = [Answer.limited("4")]
    (error,) = await vt.run(consul.leader())
    assert isinstance(error, ConsulUnavailable)
    (limited_at,) = consul_stub.at(LEADER_PATH)
    assert await vt.run(consul.own_services()) == [{}]
    (listed_at,) = consul_stub.at("/v1/agent/services")
    assert listed_at - limited_at == 4.0


async def test_a_request_waiting_out_a_retry_after_waits_out_a_longer_one_that_came_meanwhile(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    """A 429 that arrives while a request is already waiting (its request was on its way
    before the first 429) makes the wait longer: the waiting request looks again."""
    consul_stub, client = stub
    consul = client(attempts=1)
    start = vt.now
    consul_stub.script[LEADER_PATH] = [Answer.limited("2"), Answer()]
    # On its way at once, answered a second later: "4 s"
    consul_stub.script["/v1/agent/services"] = [Answer.limited("4", delay=1.0)]

    async def later() -> str:
        await vt.sleep(0.5)  # after the first 429: it waits until start + 2 ...
        return await consul.leader()

    first, slow, waiting = await vt.run(consul.leader(), consul.own_services(), later())
    assert isinstance(first, ConsulUnavailable) and isinstance(slow, ConsulUnavailable)
    assert waiting == "127.0.0.1:8300"
    # ... and, told at start + 1 to wait 4 s, sends at start + 5, not at start + 2.
    assert [t - start for t in consul_stub.at(LEADER_PATH)] == [0.0, 5.0]


def test_a_429_is_a_passing_fault_and_refusals_are_not() -> None:
    assert is_passing_fault(RateLimited(2.0, ""))
    assert not is_passing_fault(consul.exceptions.ACLPermissionDenied("Permission denied"))


async def test_a_refusal_is_not_retried_and_says_the_token_lacks_a_permission(
    stub: tuple[StubConsul, Client], vt: VirtualTime
) -> None:
    consul_stub, client = stub
    consul_stub.script["/v1/agent/services"] = [Answer(403, "Permission denied")]
    (error,) = await vt.run(client().own_services())
    assert len(consul_stub.at("/v1/agent/services")) == 1
    assert isinstance(error, ConsulRejected)
    # docs/operations.md: "… Consul refused it: the token lacks a permission …
    # (ACLPermissionDenied: Permission denied)"
    assert str(error) == (
        "agent/services: Consul refused it: the token lacks a permission (its policy:"
        " docs/operations.md) (ACLPermissionDenied: Permission denied)"
    )
