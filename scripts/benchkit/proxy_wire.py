"""What bench_proxy's client, target and forwarder share: the loopback address, the
target's three modes (sink, source, echo) and their framing, the paths' names, the
timeouts, and two socket helpers."""

from __future__ import annotations

import socket
import struct

LOOPBACK = "127.0.0.1"
CHUNK = 1024 * 1024  # bulk send/recv buffer, client and target
MODE_SINK = b"S"  # client -> target: target counts bytes until EOF, then acks the count
MODE_SOURCE = b"D"  # target -> client: 8-byte size follows; target sends that many, closes
MODE_ECHO = b"E"  # target echoes whatever it reads
COUNT = struct.Struct("!Q")
DIRECT, DOCKER, OURS = "direct", "docker-proxy", "mcp-bridge"
PATHS = (DIRECT, DOCKER, OURS)
OURS_ALLOW = "mcp-bridge+allow"
CONNECT_PATHS = (*PATHS, OURS_ALLOW)
UPLOAD, DOWNLOAD = "upload", "download"
START_TIMEOUT = 10.0
IO_TIMEOUT = 60.0


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
