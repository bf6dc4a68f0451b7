"""One attached stdio server process, shared by many clients: the asyncio side of the mux.

One task reads the server's output (stdout through the framing into the mux; stderr only
counted and kept for `status`, never parsed); one task writes, whole lines in order, from a
queue nobody waits on: a server that stops reading its stdin cannot stall the reader, the
timeouts or any client, and a write that stays stuck for WRITE_WAIT ends the attach (the
process is as good as gone, and everyone waiting is answered). A client is a Channel:
answers to its requests resolve the waits of `request`, everything else for it
(notifications, server requests) lands in its queue, bounded.

When the output ends (the process exited, the container stopped or restarted, the engine
went away) every pending request is answered at once with a JSON-RPC error saying so, and
`ended` is set: nobody is left hanging. A new process is a new StdioServer with a new mux
nonce, so an answer from the old one can never reach a new client.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.mcp.stdio.lines import Lines, encode
from bridge.mcp.stdio.mux import (
    NOT_ROUTABLE,
    OVERLOADED,
    PROCESS_ENDED,
    TIMED_OUT,
    Delivery,
    Mux,
    Outcome,
    error,
)

STDOUT = 1
INVALID_REQUEST = -32600
STDERR_KEPT = 20  # the server's last stderr lines, for status
WRITE_WAIT = 30.0  # seconds a write to the server's stdin may stay stuck
QUEUE_LIMIT = 1000  # messages waiting for one channel's reader; older ones are dropped
# Bytes written for the server and not yet taken by it: past this, a server that stopped
# reading its stdin refuses new requests at once instead of holding them in memory.
OUTBOX_LIMIT = 64 << 20


class Stream(Protocol):
    """An attach stream (docker/attach.py's Attached), as this side uses it."""

    async def write(self, data: bytes) -> None: ...

    def frames(self) -> Any: ...  # an async iterator of (stream, payload)

    async def close(self) -> None: ...

    def abort(self) -> None: ...


class Inbox(asyncio.Queue[dict[str, Any]]):
    """A channel's messages. `until(task)` waits for the next one or the task's end with
    no task of its own: a request's answer usually comes with nothing before it, and a
    reader task made (and cancelled) per request cost every call two turns of the loop."""

    def __init__(self) -> None:
        super().__init__()
        self._wake: asyncio.Future[None] | None = None

    def put_nowait(self, item: dict[str, Any]) -> None:
        super().put_nowait(item)
        self._poke()

    async def until(self, task: asyncio.Future[Any]) -> None:
        """Until a message is waiting or `task` is done (at once if either already is)."""
        if not self.empty() or task.done():
            return
        self._wake = asyncio.get_running_loop().create_future()
        task.add_done_callback(self._poke)
        try:
            await self._wake
        finally:
            task.remove_done_callback(self._poke)
            self._wake = None

    def _poke(self, _: object = None) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


@dataclass(eq=False)
class Channel:
    """One client of the shared process."""

    key: Hashable
    queue: Inbox = field(default_factory=Inbox)
    waiting: dict[Any, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)


@dataclass(slots=True)
class Counters:
    requests: int = 0
    answered: int = 0
    failed: int = 0  # answered by the bridge with an error: process ended, timed out
    skipped_lines: int = 0
    oversize_lines: int = 0
    stray_answers: int = 0
    stderr_lines: int = 0
    dropped: int = 0  # messages for a channel whose reader fell QUEUE_LIMIT behind
    bad_messages: int = 0  # messages the bridge could not route (logged, never fatal)


class StdioServer:
    def __init__(
        self,
        stream: Stream,
        *,
        max_message: int,
        request_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        on_skipped: Callable[[str], None] | None = None,
    ) -> None:
        self._stream = stream
        self._lines = Lines(max_message)
        self.mux = Mux(secrets.token_hex(6))
        self.request_timeout = request_timeout
        self._clock = clock
        self._channels: dict[Hashable, Channel] = {}
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._on_skipped = on_skipped  # called once, with the first line that was not JSON
        self.stderr: deque[str] = deque(maxlen=STDERR_KEPT)
        self.counters = Counters()
        self.ended = asyncio.Event()
        self.why_ended: str | None = None
        self._stderr_partial = b""
        self._queued = 0  # bytes in the outbox

    # ---- clients ----------------------------------------------------------------------

    def open(
        self,
        key: Hashable,
        capabilities: Iterable[str] = (),
        *,
        listens: bool = False,
        refusal: str | None = None,
    ) -> Channel:
        channel = Channel(key)
        self._channels[key] = channel
        self.mux.open(key, capabilities, listens=listens, refusal=refusal)
        return channel

    async def close(self, channel: Channel, *, cancel: bool) -> None:
        self._channels.pop(channel.key, None)
        for waiter in channel.waiting.values():
            waiter.cancel()
        self._apply(self.mux.close(channel.key, cancel=cancel))

    def submit(self, channel: Channel, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Write a request now, in order with every other write made so far (no await in
        between: what the bridge decides is what the server hears, in that order); its
        answer (or the bridge's error) when it comes."""
        rid = message.get("id")
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self.ended.is_set():
            waiter.set_result(
                error(rid, PROCESS_ENDED, self.why_ended or "the server's process ended")
            )
        elif rid in channel.waiting:  # its answer could not be told from the other's
            waiter.set_result(
                error(rid, INVALID_REQUEST, f"request id {rid!r} is already in flight")
            )
        elif self._queued > OUTBOX_LIMIT:
            why = f"the server is not reading its input: {self._queued} bytes wait"
            waiter.set_result(error(rid, OVERLOADED, why))
        else:
            channel.waiting[rid] = waiter
            waiter.add_done_callback(lambda _: _forget(channel, rid, waiter))
            self.counters.requests += 1
            self._apply(self.mux.request(channel.key, message, self._clock()))
        return waiter

    async def request(self, channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request; its answer (or the bridge's error) when it comes."""
        return await self.submit(channel, message)

    def asker_of(self, our_id: str) -> Hashable | None:
        return self.mux.asker_of(our_id)

    def client_of(self, client_id: Any, owned: Callable[[Hashable], bool]) -> Hashable | None:
        return self.mux.client_of(client_id, owned)

    async def send(self, channel: Channel, message: dict[str, Any]) -> bool:
        """A notification, or an answer to a server request the channel was given; False
        (and not sent) when the server has stopped reading its input (OUTBOX_LIMIT)."""
        if self._queued > OUTBOX_LIMIT:
            return False
        if "method" in message:
            self._apply(self.mux.notify(channel.key, message))
        else:
            self._apply(self.mux.respond(channel.key, message))
        return True

    async def write_raw(self, message: dict[str, Any]) -> None:
        """The bridge's own message, past the mux (its `notifications/initialized`)."""
        self._apply(Outcome(to_server=[message]))

    # ---- the process ----------------------------------------------------------------------

    async def run(self, why_ended: Callable[[], Awaitable[str]] | None = None) -> None:
        """Read the server's output until it ends, then answer everything still pending."""
        helpers = [
            asyncio.create_task(self._expire_loop(), name="stdio-expiry"),
            asyncio.create_task(self._write_loop(), name="stdio-writer"),
        ]
        try:
            async for stream, payload in self._stream.frames():
                if stream == STDOUT:
                    self._from_server(payload)
                else:
                    self._from_stderr(payload)
        finally:
            # First, and with no await before it: nobody may be left waiting, whatever
            # cancels this task (a shutdown) or fails below.
            why = "the server's output ended (its process exited or the container stopped)"
            self.why_ended = why
            self.ended.set()
            self._deliver(self.mux.end(why))
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._stream.close()
        if why_ended is not None:  # the reason in words, for status (the exit code)
            with contextlib.suppress(Exception):
                self.why_ended = await why_ended()

    def _from_server(self, payload: bytes) -> None:
        lines = self._lines
        for message in lines.feed(payload):
            try:
                self._apply(self.mux.from_server(message))
            except Exception:  # one odd message must not end the session for everyone
                self.counters.bad_messages += 1
        first = lines.first_skipped
        if first is not None and self.counters.skipped_lines == 0 and self._on_skipped:
            self._on_skipped(first)
        self.counters.skipped_lines = lines.skipped
        self.counters.oversize_lines = lines.oversize
        self.counters.stray_answers = self.mux.stray

    def _from_stderr(self, payload: bytes) -> None:
        text = self._stderr_partial + payload
        *complete, self._stderr_partial = text.split(b"\n")
        self._stderr_partial = self._stderr_partial[-4096:]
        for line in complete:
            self.counters.stderr_lines += 1
            self.stderr.append(line[:500].decode("utf-8", "replace"))

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.request_timeout / 4))
            self._apply(self.mux.expire(self._clock(), self.request_timeout))

    async def _write_loop(self) -> None:
        while True:
            pieces = [await self._outbox.get()]
            while not self._outbox.empty():  # what queued meanwhile goes in the same write
                pieces.append(self._outbox.get_nowait())
            data = b"".join(pieces)
            try:
                async with asyncio.timeout(WRITE_WAIT):
                    await self._stream.write(data)
                self._queued -= len(data)
            except (TimeoutError, ConnectionError, OSError):
                # Stuck or broken: the process is as good as gone. Aborting the attach (a
                # close would wait to send what is stuck) ends the reader, which answers
                # everyone still waiting.
                self._stream.abort()
                return

    # ---- delivering -------------------------------------------------------------------

    def _apply(self, out: Outcome) -> None:
        self._deliver(out)
        if out.to_server and not self.ended.is_set():
            data = b"".join(encode(m) for m in out.to_server)
            self._queued += len(data)
            self._outbox.put_nowait(data)

    def _deliver(self, out: Outcome) -> None:
        for delivery in out.to_clients:
            self._deliver_one(delivery)

    def _deliver_one(self, delivery: Delivery) -> None:
        channel = self._channels.get(delivery.client)
        if channel is None:
            return  # the client went away: its answer has nobody to go to
        message = delivery.message
        waiter = channel.waiting.get(message.get("id")) if "method" not in message else None
        if waiter is not None and not waiter.done():
            self.counters.answered += 1
            if "error" in message and _bridge_error(message):
                self.counters.failed += 1
            waiter.set_result(message)
            return
        if channel.queue.qsize() >= QUEUE_LIMIT:  # a reader this far behind is not reading
            channel.queue.get_nowait()
            self.counters.dropped += 1
        channel.queue.put_nowait(message)


def _forget(channel: Channel, rid: Any, waiter: asyncio.Future[dict[str, Any]]) -> None:
    if channel.waiting.get(rid) is waiter:
        del channel.waiting[rid]


def _bridge_error(message: dict[str, Any]) -> bool:
    said = message.get("error")
    code = said.get("code") if isinstance(said, dict) else None
    return code in (PROCESS_ENDED, NOT_ROUTABLE, TIMED_OUT)
