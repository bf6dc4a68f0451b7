"""Consul's rate limiting (429) and the errors explained, as docs/operations.md tells them
("Rate limiting (429)", "Consul over mutual TLS with ACLs"): the Retry-After read as seconds
or as an HTTP-date and capped at 30 s; the same request sent again only after it, every
other request of the client held too; an exponential backoff without it; three tries, then
the pass fails (a passing fault, not a refusal). Against a stub Consul on a real socket,
with py-consul's own client, on a virtual clock: nothing here waits for real."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import heapq
import itertools
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import consul.exceptions
import pytest
from aiohttp import web

from bridge.consul_client import ConsulClient
from bridge.consul_http import (
    MAX_RETRY_AFTER,
    RateLimited,
    _retry_after,
    explain,
    is_passing_fault,
)
from bridge.protocols import ConsulRejected, ConsulUnavailable
from tests.pki import Authority

# Wed, 21 Oct 2015 07:28:00 GMT: "now" for the HTTP-dates below
EPOCH = 1_445_412_480.0
LEADER = '"127.0.0.1:8300"'

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


# ---- a virtual clock, and a stub Consul ---------------------------------------------------


@dataclass
class VirtualTime:
    """`sleep` and `clock` for ConsulClient, and for the stub's handlers. Time moves only
    when every task `run` drives is waiting on it (the stub's delayed answers count for
    the request that waits for them), straight to the earliest wake-up."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)
    _heap: list[tuple[float, int, asyncio.Future[None]]] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (self.now + max(0.0, seconds), next(self._seq), woken))
        await woken

    async def run(self, *calls: Awaitable[Any]) -> list[Any]:
        """Drive `calls` to their ends; each one's result or exception."""
        tasks = [asyncio.ensure_future(c) for c in calls]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20  # real seconds: a stuck test fails, never hangs
        while not all(t.done() for t in tasks):
            assert loop.time() < deadline, "the calls neither ended nor waited"
            if self._heap and len(self._heap) >= sum(not t.done() for t in tasks):
                when, _, woken = heapq.heappop(self._heap)
                self.now = max(self.now, when)
                woken.set_result(None)
            await asyncio.sleep(0.001)  # real: sockets move
        return [t.exception() or t.result() for t in tasks]


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = LEADER
    retry_after: str | None = None
    delay: float = 0.0  # virtual seconds before answering

    @classmethod
    def limited(cls, retry_after: str | None = None, delay: float = 0.0) -> Answer:
        return cls(429, "rate limit exceeded", retry_after, delay)


@dataclass
class StubConsul:
    """Answers each path from its script (then 200 with a leader, or `{}` for a listing);
    notes when (on the virtual clock) each request came."""

    time: VirtualTime
    script: dict[str, list[Answer]] = field(default_factory=dict)
    came: list[tuple[float, str]] = field(default_factory=list)

    def at(self, path: str) -> list[float]:
        return [t for t, p in self.came if p == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.came.append((self.time.now, request.path))
        queue = self.script.get(request.path) or []
        default = Answer() if request.path == LEADER else Answer(body="{}")
        answer = queue.pop(0) if queue else default
        if answer.delay:
            await self.time.sleep(answer.delay)
        headers = {"Retry-After": answer.retry_after} if answer.retry_after else {}
        return web.Response(
            status=answer.status,
            text=answer.body,
            headers={"X-Consul-Index": "1", "Content-Type": "application/json", **headers},
        )


Client = Callable[..., ConsulClient]


@contextlib.asynccontextmanager
async def serving(
    stub: StubConsul, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stub.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


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


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


LEADER = "/v1/status/leader"


async def ask_leader(
    stub: tuple[StubConsul, Client], vt: VirtualTime, answers: list[Answer], **options: Any
) -> tuple[Any, list[float]]:
    """One `leader()` call against scripted answers: its result (or error), and when each
    try reached the stub."""
    consul_stub, client = stub
    consul_stub.script[LEADER] = answers
    (result,) = await vt.run(client(**options).leader())
    return result, consul_stub.at(LEADER)


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
    consul_stub.script[LEADER] = [Answer.limited("4")]
    (error,) = await vt.run(consul.leader())
    assert isinstance(error, ConsulUnavailable)
    (limited_at,) = consul_stub.at(LEADER)
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
    consul_stub.script[LEADER] = [Answer.limited("2"), Answer()]
    # On its way at once, answered a second later: "4 s"
    consul_stub.script["/v1/agent/services"] = [Answer.limited("4", delay=1.0)]

    async def later() -> str:
        await vt.sleep(0.5)  # after the first 429: it waits until start + 2 ...
        return await consul.leader()

    first, slow, waiting = await vt.run(consul.leader(), consul.own_services(), later())
    assert isinstance(first, ConsulUnavailable) and isinstance(slow, ConsulUnavailable)
    assert waiting == "127.0.0.1:8300"
    # ... and, told at start + 1 to wait 4 s, sends at start + 5, not at start + 2.
    assert [t - start for t in consul_stub.at(LEADER)] == [0.0, 5.0]


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


# ---- explain ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca, other = Authority(root / "ca", "ca"), Authority(root / "other", "other")
    server = ca.issue("server", server=True)
    client = ca.issue("client", server=False)
    expired = ca.issue("expired", server=False, expired=True)
    return {
        "ca": ca.pem,
        "other_ca": other.pem,
        "server": server.cert,
        "server_key": server.key,
        "client": client.cert,
        "client_key": client.key,
        "expired": expired.cert,
    }


def ssl_error(reason: str, text: str) -> ssl.SSLError:
    """An SSLError as the ssl module words it (str: "[SSL: REASON] text (_ssl.c:…)")."""
    return ssl.SSLError(1, f"[SSL: {reason}] {text} (_ssl.c:1000)")


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (
            ssl.SSLCertVerificationError(
                1,
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get"
                " local issuer certificate (_ssl.c:1000)",
            ),
            "TLS: Consul's certificate does not verify against CONSUL_CACERT",
        ),
        (
            ssl_error("SSLV3_ALERT_CERTIFICATE_EXPIRED", "sslv3 alert certificate expired"),
            "TLS: Consul refused the client certificate, which has expired",
        ),
        (
            ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED", "tlsv13 alert certificate required"),
            "TLS: Consul wants a client certificate (CONSUL_CLIENT_CERT/_KEY)",
        ),
        (
            ssl_error("SSLV3_ALERT_BAD_CERTIFICATE", "sslv3 alert bad certificate"),
            "TLS: Consul refused the client certificate (CONSUL_CLIENT_CERT/_KEY)",
        ),
        (
            ssl_error("TLSV1_ALERT_UNKNOWN_CA", "tlsv1 alert unknown ca"),
            "TLS: Consul does not know the client certificate's CA",
        ),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory"),
            "cannot read a TLS file (CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)",
        ),
        (
            # A key file of another user: the same, and no word of the token.
            PermissionError(errno.EACCES, "Permission denied"),
            "cannot read a TLS file (CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)",
        ),
        (
            consul.exceptions.ACLPermissionDenied("Permission denied"),
            "the token lacks a permission (its policy: docs/operations.md)",
        ),
        (
            consul.exceptions.ACLPermissionDenied("ACL not found"),
            "Consul does not know the token (CONSUL_HTTP_TOKEN)",
        ),
        (RateLimited(None, "rate limit exceeded"), "rate limited by Consul"),
    ],
)
def test_explain_names_the_cause_then_the_error(error: Exception, cause: str) -> None:
    said = explain(error)
    assert said == f"{cause} ({type(error).__name__}: {error})"
    assert "\n" not in said


def test_explain_leaves_an_error_it_has_no_cause_for_as_it_is() -> None:
    error = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert explain(error) == "ConnectionRefusedError: [Errno 111] Connection refused"


@pytest.mark.parametrize(
    "alert",
    [
        ssl_error("SSLV3_ALERT_CERTIFICATE_EXPIRED", "sslv3 alert certificate expired"),
        ssl_error("SSLV3_ALERT_BAD_CERTIFICATE", "sslv3 alert bad certificate"),
    ],
)
def test_a_refused_client_certificate_that_has_expired_says_when(
    alert: ssl.SSLError, pki: dict[str, Path]
) -> None:
    said = explain(alert, client_cert=str(pki["expired"]))
    # docs/operations.md: "TLS: Consul refused the client certificate …: it expired on
    # <date> (…)"
    assert said.startswith("TLS: Consul refused the client certificate")
    assert ": it expired on " in said and " GMT (SSLError: " in said


def test_a_refused_client_certificate_still_valid_or_unreadable_says_no_date(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    alert = ssl_error("SSLV3_ALERT_BAD_CERTIFICATE", "sslv3 alert bad certificate")
    for cert in (pki["client"], tmp_path / "missing.pem"):
        said = explain(alert, client_cert=str(cert))
        assert "expired on" not in said
        assert said.startswith("TLS: Consul refused the client certificate (CONSUL_CLIENT")


def test_an_expired_client_certificate_is_not_blamed_for_other_errors(
    pki: dict[str, Path],
) -> None:
    said = explain(consul.exceptions.ACLPermissionDenied("Permission denied"), str(pki["expired"]))
    assert "expired" not in said


async def test_a_wrong_ca_is_named_and_mending_the_file_is_enough(
    pki: dict[str, Path], tmp_path: Path, vt: VirtualTime
) -> None:
    """Mutual TLS against a stub: CONSUL_CACERT that did not sign the server's certificate
    is one clear line; the client is made anew after it, so the mended file is read."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    server.load_cert_chain(str(pki["server"]), str(pki["server_key"]))
    server.verify_mode = ssl.CERT_REQUIRED
    cacert = tmp_path / "ca.pem"
    shutil.copy(pki["other_ca"], cacert)
    async with serving(StubConsul(vt), server) as url:
        consul = ConsulClient(
            url, "n1", cacert=str(cacert), client_cert=str(pki["client"]),
            client_key=str(pki["client_key"]), sleep=vt.sleep, clock=vt.clock,
        )  # fmt: skip
        try:
            (error,) = await vt.run(consul.leader())
            assert isinstance(error, ConsulUnavailable)
            said = str(error)
            assert said.startswith(
                f"status/leader at {url}: TLS: Consul's certificate does not verify against"
                " CONSUL_CACERT ("
            ), said
            assert "CERTIFICATE_VERIFY_FAILED" in said and "\n" not in said
            shutil.copy(pki["ca"], cacert)  # mended in place
            assert await vt.run(consul.leader()) == ["127.0.0.1:8300"]
        finally:
            await consul.close()
