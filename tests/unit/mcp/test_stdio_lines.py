"""The stdio framing: lines joined across Docker's frames, banners skipped and counted,
oversize lines dropped whole without being held."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bridge.mcp.stdio.lines import Lines, encode

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def test_one_message_per_line_whatever_the_cuts() -> None:
    data = encode(PING) + encode({"jsonrpc": "2.0", "id": 2, "result": {}})
    for cut in range(len(data) + 1):
        lines = Lines(max_message=1024)
        got = lines.feed(data[:cut]) + lines.feed(data[cut:])
        assert [m["id"] for m in got] == [1, 2]


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_cutting_of_the_stream_gives_the_same_messages(cuts: list[int]) -> None:
    messages = [{"jsonrpc": "2.0", "id": i, "params": {"s": "x" * i}} for i in range(20)]
    data = b"".join(encode(m) for m in messages)
    lines, got, start = Lines(max_message=1024), [], 0
    for cut in [*sorted(cuts), len(data)]:
        got += lines.feed(data[start:cut])
        start = max(start, cut)
    assert got == messages
    assert lines.skipped == lines.oversize == 0


def test_banners_and_non_objects_are_skipped_and_counted() -> None:
    lines = Lines(max_message=1024)
    got = lines.feed(b"Server starting on stdio\n[1,2]\n\n" + encode(PING) + b"42\n")
    assert got == [PING]
    assert lines.skipped == 3  # the banner, an array, a number; a blank line is nothing
    assert lines.first_skipped == "Server starting on stdio"


def test_a_line_over_the_limit_is_dropped_whole_and_the_next_one_kept() -> None:
    lines = Lines(max_message=100)
    huge = json.dumps({"jsonrpc": "2.0", "id": 9, "result": {"s": "y" * 500}}).encode()
    got = lines.feed(huge[:60])
    got += lines.feed(huge[60:300])  # past the limit: nothing is held from here on
    assert len(lines._buffer) == 0
    got += lines.feed(huge[300:] + b"\n" + encode(PING))
    assert got == [PING]
    assert lines.oversize == 1


def test_crlf_line_ends_are_accepted() -> None:
    assert Lines(max_message=1024).feed(json.dumps(PING).encode() + b"\r\n") == [PING]


def test_encode_never_writes_a_raw_newline_inside_a_message() -> None:
    line = encode({"jsonrpc": "2.0", "id": 1, "params": {"text": "a\nb", "ü": "é"}})
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert json.loads(line)["params"]["text"] == "a\nb"
