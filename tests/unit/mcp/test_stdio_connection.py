"""The one connection's members (bridge/mcp/stdio/connection.py) against an in-memory
server: what the server is told reaches it in the order the bridge decided it, so a
member that leaves and one that joins at once leave the server as the bridge believes
it is; a refused subscription leaves nobody counted for it."""

from __future__ import annotations

from typing import Any

from bridge.mcp.stdio.connection import Connection
from tests.unit.mcp.test_stdio_process import echo_server, started


def asked(process: Any, *methods: str) -> list[tuple[str, Any]]:
    return [
        (m["method"], m["params"]) for m in process.seen if m.get("method") in methods and "id" in m
    ]


def subscribe(uri: str, method: str = "resources/subscribe") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 3, "method": method, "params": {"uri": uri}}


async def test_a_member_that_leaves_and_one_that_joins_at_once_reach_the_server_in_order() -> None:
    process, server, reading = started(echo_server)
    connection = Connection()
    for uri in ("a://1", "a://2"):
        await connection.request(server, "s1", subscribe(uri))
    connection.leave(server, "s1")  # told at once, answered in the background
    for uri in ("a://1", "a://2"):  # the reconnecting client, before those answers came
        assert "result" in await connection.request(server, "s2", subscribe(uri))
    methods = [m for m, _ in asked(process, "resources/subscribe", "resources/unsubscribe")]
    assert (
        methods
        == ["resources/subscribe"] * 2 + ["resources/unsubscribe"] * 2 + ["resources/subscribe"] * 2
    )  # the server ends holding both, as the bridge believes
    assert connection.shared.subscribers == {"a://1": {"s2"}, "a://2": {"s2"}}
    process.exit()
    await reading


async def test_levels_reach_the_server_in_the_order_decided() -> None:
    process, server, reading = started(echo_server)
    connection = Connection()
    await connection.set_level(server, "b", "info")
    await connection.set_level(server, "a", "debug")
    connection.leave(server, "a")  # info again, said now
    await connection.set_level(server, "c", "debug")  # debug again, said after it
    levels = [p["level"] for _, p in asked(process, "logging/setLevel")]
    assert levels == ["info", "debug", "info", "debug"]  # ends where the bridge believes
    assert connection.shared.sent_level == "debug"
    connection.leave(server, "b")
    connection.leave(server, "c")  # nobody holds a level: back to quiet
    await connection.set_level(server, "d", "error")
    levels = [p["level"] for _, p in asked(process, "logging/setLevel")]
    assert levels[-2:] == ["info", "error"]
    process.exit()
    await reading


async def test_a_refused_subscription_is_held_by_nobody_and_an_unsubscribe_keeps_the_others() -> (
    None
):
    def refusing(message: dict[str, Any]) -> list[dict[str, Any]]:
        if message.get("method") == "resources/subscribe" and message["params"]["uri"] == "bad":
            return [
                {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32602, "message": "no"}}
            ]
        return echo_server(message)

    process, server, reading = started(refusing)
    connection = Connection()
    answer = await connection.request(server, "s1", subscribe("bad"))
    assert answer["id"] == 3 and answer["error"]["message"] == "no"
    assert "bad" not in connection.shared.subscribers
    await connection.request(server, "s1", subscribe("a://1"))
    await connection.request(server, "s2", subscribe("a://1"))
    await connection.request(server, "s1", subscribe("a://1", "resources/unsubscribe"))
    assert connection.shared.subscribers == {"a://1": {"s2"}}  # s2 still holds it
    assert [m for m, _ in asked(process, "resources/unsubscribe")] == []  # still wanted
    process.exit()
    await reading
