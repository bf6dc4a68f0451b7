"""Per-connection requests shared out among sessions (bridge/mcp/stdio/shared.py): the
server asked for the most verbose level any session set, each session given its own
level's messages; a resource subscribed while anyone wants it, its updates to those only."""

from __future__ import annotations

from typing import Any

from bridge.mcp.stdio.shared import Shared


def log(level: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": level}}


def updated(uri: str) -> dict[str, Any]:
    return {"method": "notifications/resources/updated", "params": {"uri": uri}}


def test_the_server_hears_the_most_verbose_level_and_each_session_its_own() -> None:
    shared = Shared()
    assert shared.set_level("a", "warning") == "warning"
    assert shared.set_level("b", "debug") == "debug"
    assert shared.set_level("a", "error") is None  # b still wants debug
    assert [shared.wants("a", log(x)) for x in ("debug", "warning", "error")] == [
        False, False, True,
    ]  # fmt: skip
    assert all(shared.wants("b", log(x)) for x in ("debug", "emergency"))
    assert shared.wants("c", log("debug"))  # a session that set no level gets them all
    assert shared.forget("b") == ("error", [])  # the server goes back to what a wants


def test_a_resource_is_subscribed_while_anyone_wants_it() -> None:
    shared = Shared()
    assert shared.subscribe("a", "file:///x") is True
    assert shared.subscribe("b", "file:///x") is False
    assert shared.wants("a", updated("file:///x")) and not shared.wants("c", updated("file:///x"))
    assert shared.unsubscribe("a", "file:///x") is False  # b still wants it
    assert shared.unsubscribe("c", "file:///x") is False  # c never had it
    assert shared.forget("b") == (None, ["file:///x"])  # the last one: unsubscribe at the server
    assert not shared.wants("b", updated("file:///x"))


def test_other_notifications_go_to_every_listener() -> None:
    changed = {"method": "notifications/tools/list_changed"}
    assert Shared().wants("any", changed)
