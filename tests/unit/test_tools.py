"""Tool inventories: digest, the KV record and its size limit, which records to forget, and
the check runner keeping meta and KV in step with a server's tools."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from bridge import tools as tools_module
from bridge.checks import CheckRunner
from bridge.model import CheckKind, CheckTarget
from bridge.probe import ProbeResult
from bridge.reconcile import records_to_forget
from bridge.tools import digest, kv_record, tools_key
from tests.builders import own_service
from tests.fakes import FakeConsul

SID = "n1:mcp-a"
KEY = f"mcp-bridge/n1/{SID}/tools"


def tool(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "inputSchema": {"type": "object"}, **more}


def test_the_key_is_under_the_bridges_own_prefix_and_node() -> None:
    assert tools_key("mcp-bridge", "n1", SID) == KEY


def test_digest_changes_with_any_field_and_only_then() -> None:
    base = [tool("a"), tool("b", description="x")]
    assert digest(base) == digest([dict(t) for t in base])
    assert digest(base) != digest([tool("a"), tool("b", description="y")])
    assert digest(base) != digest(base[:1])


def test_a_record_holds_every_tool_when_it_fits() -> None:
    listed = [tool("a", description="one"), tool("b")]
    record = json.loads(kv_record(listed, service="svc", protocol="2026-07-28"))
    assert record == {
        "service": "svc",
        "protocol": "2026-07-28",
        "count": 2,
        "hash": digest(listed),
        "truncated": 0,
        "tools": listed,
    }


def test_a_record_over_the_limit_is_cut_with_a_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools_module, "KV_VALUE_LIMIT", 2000)
    listed = [tool(f"t{i:03}", description="d" * 100) for i in range(100)]
    raw = kv_record(listed, service="svc")
    assert len(raw) <= 2000
    record = json.loads(raw)
    assert record["count"] == 100 and record["hash"] == digest(listed)
    assert 0 < len(record["tools"]) < 100
    assert record["truncated"] == 100 - len(record["tools"])
    assert record["tools"] == listed[: len(record["tools"])]


def test_records_to_forget() -> None:
    base = "mcp-bridge/n1/"
    listed = [f"{base}n1:keep/tools", f"{base}n1:orphan/tools", f"{base}n1:notools/tools"]
    listed.append(f"{base}owner")  # the node id's lock: never a record to forget
    assert records_to_forget(base, withdrawn=["n1:gone"], listed=None, keep=set()) == (
        f"{base}n1:gone/tools",
    )
    assert records_to_forget(base, withdrawn=[], listed=listed, keep={"n1:keep"}) == (
        f"{base}n1:notools/tools",
        f"{base}n1:orphan/tools",
    )


class FakeProbe:
    """Answers as a passing server with `tools`; records whether tools were asked for."""

    def __init__(self) -> None:
        self.tools = [tool("a")]
        self.asked: list[bool] = []

    async def __call__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        transport: str,
        budget: float,
        *,
        want_tools: bool,
    ) -> ProbeResult:
        self.asked.append(want_tools)
        meta = {"mcp_server_name": "srv", "mcp_protocol_version": "2026-07-28"}
        return ProbeResult("passing", "ok", meta, tools=list(self.tools) if want_tools else None)


def target(tools: bool = True) -> CheckTarget:
    return CheckTarget(
        service_id=SID,
        service="a",
        container="mcp-a",
        check_id=f"{SID}:mcp",
        kind=CheckKind.MCP,
        url="http://127.0.0.1:9/mcp",
        transport="streamable-http",
        interval=3600,
        timeout=1,
        tools=tools,
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_tools_go_to_meta_and_kv_at_most_once_per_interval() -> None:
    consul, probe, metas = FakeConsul("n1"), FakeProbe(), []
    consul.services[SID] = own_service("mcp-a", 11100)
    runner = CheckRunner(
        consul,
        on_meta=lambda sid, meta: metas.append(meta),
        health_of=lambda _: None,
        prober=probe,
        tools_interval=300,
    )
    puts: list[bytes] = []
    real_put = consul.kv_put

    async def counting_put(key: str, value: bytes) -> None:
        puts.append(value)
        await real_put(key, value)

    consul.kv_put = counting_put  # type: ignore[method-assign]
    try:
        runner.sync({SID: target()})
        await settle()
        assert probe.asked == [True]
        assert json.loads(consul.kv[KEY])["tools"] == [tool("a")]
        assert metas[-1]["mcp_tools"] == "1" and metas[-1]["mcp_tools_hash"] == digest([tool("a")])
        runner.kick(SID)  # a probe inside the interval does not list again
        await settle()
        assert probe.asked == [True, False]
        assert metas[-1]["mcp_tools"] == "1", "tool meta dropped between listings"
        checks = runner._checks[SID]
        checks.tools_due = 0.0  # the interval has passed; the same tools: no new write
        runner.kick(SID)
        await settle()
        assert probe.asked[-1] is True and len(puts) == 1
        probe.tools = [tool("a"), tool("b")]  # the server's tools change
        checks._tools_changed()  # as the listen stream reports it
        await settle()
        assert len(puts) == 2 and json.loads(consul.kv[KEY])["count"] == 2
        assert metas[-1]["mcp_tools"] == "2"
    finally:
        await runner.close()


async def test_the_label_turns_the_inventory_off() -> None:
    consul, probe = FakeConsul("n1"), FakeProbe()
    consul.services[SID] = own_service("mcp-a", 11100)
    runner = CheckRunner(consul, on_meta=lambda *_: None, health_of=lambda _: None, prober=probe)
    try:
        runner.sync({SID: target(tools=False)})
        await settle()
        assert probe.asked == [False] and consul.kv == {}
    finally:
        await runner.close()
