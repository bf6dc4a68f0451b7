"""The gateway's tool names (bridge/gateway/names.py): `<service>__<tool>`, never two
services' tools under one name, within 128 characters with a stable shortening."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from bridge.gateway.names import MAX_NAME, listing, offered_name, union

SERVICES = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
TOOLS = st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=200)


def test_a_tool_is_offered_under_its_service() -> None:
    assert offered_name("time", "get_current_time") == "time__get_current_time"


def test_a_long_name_is_cut_with_a_stable_mark_of_the_whole_name() -> None:
    long_tool = "t" * 150
    name = offered_name("svc", long_tool)
    assert len(name) == MAX_NAME and name.startswith("svc__ttt")
    assert name == offered_name("svc", long_tool)  # the same on every gateway, every time
    assert name != offered_name("svc", long_tool + "x")  # the mark tells them apart


@given(SERVICES, TOOLS, SERVICES, TOOLS)
def test_two_services_tools_never_share_a_name(s1: str, t1: str, s2: str, t2: str) -> None:
    a, b = offered_name(s1, t1), offered_name(s2, t2)
    assert len(a) <= MAX_NAME and len(b) <= MAX_NAME
    if s1 != s2:
        assert a != b  # the service is everything before the first "_"
        assert a.split("_", 1)[0] == s1


def test_the_union_keeps_each_definition_whole_under_its_offered_name() -> None:
    echo = {
        "name": "echo",
        "description": "says it back",
        "inputSchema": {"type": "object"},
        "outputSchema": {"type": "object"},
        "annotations": {"destructiveHint": False},
        "_meta": {"x": 1},
    }
    offered = union({"b": [echo], "a": [echo, {"name": "echo"}, {"no": "name"}]})
    assert sorted(offered) == ["a__echo", "b__echo"]
    assert offered["a__echo"].tool == "echo" and offered["a__echo"].service == "a"
    tools = listing(offered)
    assert tools[0] == {**echo, "name": "a__echo"}
