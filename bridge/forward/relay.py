"""One forwarded connection, relayed in the kernel with os.splice.

For each direction, socket -> pipe -> socket, driven by the event loop's readiness
callbacks. The bytes never enter Python, which is what makes the relay as fast as
docker-proxy (an asyncio-protocol relay spent its CPU on two user-space copies and reached
0.77-0.88x of docker-proxy's throughput; see docs/benchmarks.md).

- A direction reads only while its pipe is empty and writes until the pipe is empty, so
  each direction holds at most PIPE_SIZE bytes: backpressure without any buffer in RSS;
  a peer that stops reading stops the other side's reads.
- Half-close passes through: EOF from one side, once its pipe has drained, becomes
  shutdown(SHUT_WR) on the other; the connection ends when both directions have ended.
- A reset or write error on either side resets both (SO_LINGER 0), so a dead upstream
  closes the client at once instead of leaving it hanging.

Each connection costs two sockets and two pipes (six descriptors).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
from typing import Protocol

import structlog

from bridge.core.model import ForwarderCounters, ForwardTarget, container_of
from bridge.core.net import family

log = structlog.get_logger("bridge.forwarder")

# A pipe starts at the kernel's default (64 KiB) and grows to PIPE_SIZE the first time a
# read fills it: bulk transfers get the big pipe (1 MiB measured 0.93-1.01x docker-proxy's
# throughput, 256 KiB 0.82-0.86x), while the many quiet request/response connections stay
# small and within the kernel's per-user pipe budget (fs.pipe-user-pages-soft, 64 MiB by
# default, which applies in containers without CAP_SYS_RESOURCE). When the kernel refuses
# to grow a pipe, it keeps working at the size it has.
PIPE_SIZE = 1024 * 1024
CONNECT_TIMEOUT = 5.0
_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def reset_close(sock: socket.socket) -> None:
    """Close with a reset (RST), so the peer is not left waiting for a graceful end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


_READING, _WRITING = "reading", "writing"
SPARE_PIPES = 64  # empty pipes kept for reuse (two descriptors each)
_SPARE_PIPES: list[tuple[int, int, int]] = []  # read end, write end, capacity


_POLL = select.poll()


def _connected_now(sock: socket.socket) -> bool:
    """Whether a non-blocking connect has finished already: to a local address (loopback,
    a container on this host's bridge) the handshake completes inside connect(), and one
    poll() here saves a turn of the event loop and two epoll_ctl calls per connection."""
    fd = sock.fileno()
    _POLL.register(fd, select.POLLOUT)
    try:
        return bool(_POLL.poll(0))
    finally:
        _POLL.unregister(fd)


def close_spare_pipes() -> None:
    while _SPARE_PIPES:
        r, w, _ = _SPARE_PIPES.pop()
        os.close(r)
        os.close(w)


class LinkOwner(Protocol):
    """The listener a connection belongs to (forwarder.Forwarder)."""

    service_id: str
    target: ForwardTarget
    counters: ForwarderCounters
    links: set[Link]


class _Pump:
    """One direction of a connection: src socket -> pipe -> dst socket.

    Invariant: it reads src only while the pipe is empty and waits for dst to be writable
    only while the pipe holds bytes, so one readiness callback is armed at a time.
    """

    __slots__ = (
        "armed",
        "capacity",
        "done",
        "dst",
        "eof",
        "grown",
        "in_pipe",
        "inbound",
        "link",
        "r",
        "src",
        "w",
    )

    def __init__(self, link: Link, src: int, dst: int, inbound: bool) -> None:
        self.link = link
        self.src = src
        self.dst = dst
        self.inbound = inbound
        if _SPARE_PIPES:
            self.r, self.w, self.capacity = _SPARE_PIPES.pop()
        else:
            self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self.capacity = fcntl.fcntl(self.w, _F_GETPIPE_SZ)
        self.grown = False
        self.in_pipe = 0
        self.eof = False
        self.done = False
        self.armed: str | None = None  # the one readiness callback armed now

    def start(self, eager: bool = False) -> None:
        """Arm the reader; `eager`: read once first, for bytes that are there already (a
        client's request usually is by the time its upstream answers), saving a turn of
        the event loop on every new connection."""
        if eager:
            self._on_readable()
            if self.link.closed or self.armed is not None or self.eof:
                return
        self.link.loop.add_reader(self.src, self._on_readable)
        self.armed = _READING

    def _stop_reading(self) -> None:
        if self.armed == _READING:
            self.link.loop.remove_reader(self.src)
        self.armed = None

    def _on_readable(self) -> None:
        try:
            n = os.splice(self.src, self.w, self.capacity, flags=_SPLICE_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.link.abort()
            return
        if n == 0:
            self.eof = True
            self._stop_reading()
            self._finish()
            return
        self.in_pipe = n
        if n == self.capacity and not self.grown:
            self._grow()
        if self.inbound:
            self.link.counters.bytes_in += n
        else:
            self.link.counters.bytes_out += n
        if not self._flush():
            # dst is full: stop reading src until it drains (backpressure).
            self._stop_reading()
            self.link.loop.add_writer(self.dst, self._on_writable)
            self.armed = _WRITING

    def _grow(self) -> None:
        self.grown = True  # once: a refusal (pipe budget) is not asked again every read
        with contextlib.suppress(OSError):
            self.capacity = fcntl.fcntl(self.w, _F_SETPIPE_SZ, PIPE_SIZE)

    def _flush(self) -> bool:
        """Move the pipe into dst; False when dst would block."""
        while self.in_pipe:
            try:
                n = os.splice(self.r, self.dst, self.in_pipe, flags=_SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                self.link.abort()
                return True  # the link is gone; nothing is armed any more
            self.in_pipe -= n
        return True

    def _on_writable(self) -> None:
        if not self._flush():
            return
        if self.link.closed:
            return
        self.link.loop.remove_writer(self.dst)
        self.armed = None
        if self.eof:
            self._finish()
        else:
            self.link.loop.add_reader(self.src, self._on_readable)
            self.armed = _READING

    def _finish(self) -> None:
        if self.in_pipe:
            return  # the pipe drains first; _on_writable comes back here
        self.done = True
        self.link.pump_done(self)

    def disarm(self) -> None:
        # Only what is armed: removing an unregistered descriptor costs asyncio a KeyError
        # with a formatted message, twice per connection for nothing.
        if self.armed == _READING:
            self.link.loop.remove_reader(self.src)
        elif self.armed == _WRITING:
            self.link.loop.remove_writer(self.dst)
        self.armed = None

    def close_pipe(self) -> None:
        # An empty pipe of the default size is kept for the next connection, as Go's
        # runtime does for its splices: short connections then cost no pipe2 and closes.
        if not self.in_pipe and not self.grown and len(_SPARE_PIPES) < SPARE_PIPES:
            _SPARE_PIPES.append((self.r, self.w, self.capacity))
            return
        os.close(self.r)
        os.close(self.w)


class Link:
    """One client connection and its upstream."""

    def __init__(self, forwarder: LinkOwner, client: socket.socket) -> None:
        self.forwarder = forwarder
        self.counters = forwarder.counters
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.upstream: socket.socket | None = None
        self.pumps: list[_Pump] = []
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None  # while connecting upstream

    @property
    def buffered(self) -> int:
        """Bytes the forwarder holds for this connection (all of them in kernel pipes)."""
        return sum(p.in_pipe for p in self.pumps)

    def start(self) -> None:
        """Connect upstream, then relay. Callbacks, not a task: a new connection costs a
        socket and two readiness callbacks, which is what keeps the connection rate up."""
        # The client is not read until the upstream answers: what it sends meanwhile
        # waits in its socket buffer, and a server that speaks first loses nothing.
        target = self.forwarder.target
        try:
            upstream = socket.socket(family(target.address), socket.SOCK_STREAM)
        except OSError as exc:
            self._fail(target, exc)
            return
        self.upstream = upstream
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = upstream.connect_ex((target.address, target.port))
        if err == 0 or (err == errno.EINPROGRESS and _connected_now(upstream)):
            self._on_connect()
        elif err in (errno.EINPROGRESS, errno.EAGAIN):
            self.loop.add_writer(upstream.fileno(), self._on_connect)
            self._timer = self.loop.call_later(CONNECT_TIMEOUT, self._on_connect_timeout)
        else:
            self._fail(target, OSError(err, os.strerror(err)))

    def _stop_connecting(self) -> None:
        if self._timer is not None and self.upstream is not None:
            self._timer.cancel()
            self._timer = None
            self.loop.remove_writer(self.upstream.fileno())

    def _on_connect(self) -> None:
        self._stop_connecting()
        assert self.upstream is not None
        err = self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(self.forwarder.target, OSError(err, os.strerror(err)))
        else:
            self._relay()

    def _on_connect_timeout(self) -> None:
        self._timer = None
        assert self.upstream is not None
        self.loop.remove_writer(self.upstream.fileno())
        self._fail(self.forwarder.target, TimeoutError(f"no answer in {CONNECT_TIMEOUT:g}s"))

    def _relay(self) -> None:
        assert self.upstream is not None
        target = self.forwarder.target
        client, up = self.client.fileno(), self.upstream.fileno()
        try:
            self.pumps.append(_Pump(self, client, up, inbound=True))
            self.pumps.append(_Pump(self, up, client, inbound=False))
        except OSError as exc:  # EMFILE: no descriptors left for the pipes
            self._fail(target, exc)
            return
        self.pumps[0].start(eager=True)
        self.pumps[1].start()

    def _fail(self, target: ForwardTarget, exc: BaseException) -> None:
        self.counters.failed += 1
        log.warning(
            "forward_connect_failed",
            container=container_of(self.forwarder.service_id),
            service_id=self.forwarder.service_id,
            port=target.listen_port,
            target=f"{target.address}:{target.port}",
            error=str(exc) or type(exc).__name__,
        )
        self.abort()

    def pump_done(self, pump: _Pump) -> None:
        # EOF has crossed: pass the half-close on, and end once both ways have ended (the
        # close then sends that side's FIN itself: no shutdown call for it).
        if all(p.done for p in self.pumps):
            self._close(reset=False)
            return
        sock = self.upstream if pump.inbound else self.client
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    def abort(self) -> None:
        """A reset or error on one side: reset both, at once."""
        self._close(reset=True)

    def _close(self, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_connecting()
        for pump in self.pumps:
            pump.disarm()  # before any descriptor closes: numbers get reused
        for pump in self.pumps:
            pump.close_pipe()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if reset:
                reset_close(sock)
            else:
                sock.close()
        self.counters.active -= 1
        self.forwarder.links.discard(self)
