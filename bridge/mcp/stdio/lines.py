"""The MCP stdio transport's framing: one JSON-RPC message per line on the server's stdout.

Docker's frames cut the output wherever the server's writes fell, so lines are joined
across frames here. Bad input is normal input: a line that is not a JSON object (banners
and stray prints are common) is skipped and counted, and a line longer than the limit
(BRIDGE_STDIO_MAX_MESSAGE) is dropped whole, up to its newline, without holding it in
memory, so one runaway write cannot grow the bridge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Lines:
    """Bytes in, complete messages out."""

    max_message: int
    skipped: int = 0  # lines that were not a JSON object
    oversize: int = 0  # lines over max_message, dropped
    first_skipped: str | None = None  # the first skipped line, shortened, for one log event
    _buffer: bytearray = field(default_factory=bytearray)
    _dropping: bool = False  # inside an oversize line: discard up to its newline

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            piece = data[start:end]
            start = end + 1
            if self._dropping:
                self._dropping = False
                self._buffer.clear()
                continue
            if self._buffer:
                self._buffer += piece
                piece, self._buffer = bytes(self._buffer), bytearray()
            piece = piece.removesuffix(b"\r")  # CRLF: the \r is no part of the message
            if len(piece) > self.max_message:
                self.oversize += 1
                continue
            message = self._decode(piece)
            if message is not None:
                messages.append(message)
        rest = data[start:]
        if not self._dropping and rest:
            if len(self._buffer) + len(rest) > self.max_message:
                self.oversize += 1
                self._dropping = True
                self._buffer.clear()
            else:
                self._buffer += rest
        return messages

    def _decode(self, line: bytes) -> dict[str, Any] | None:
        text = line.strip()
        if not text:
            return None  # blank lines are no message, and no fault either
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's
            message = None
        if isinstance(message, dict):
            return message
        self.skipped += 1
        if self.first_skipped is None:
            self.first_skipped = text[:200].decode("utf-8", "replace")
        return None


def encode(message: dict[str, Any]) -> bytes:
    """One message as a stdio line: compact JSON (never a raw newline inside) and '\\n'.
    ASCII with escapes: a lone surrogate a peer sent (valid JSON) still encodes."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
