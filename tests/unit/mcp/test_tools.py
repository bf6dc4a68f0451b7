"""Tool inventories: digest, the KV record and its size limit, which records to forget, and
the check runner keeping meta and KV in step with a server's tools."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from bridge.core.model import CheckKind, CheckTarget, tools_key
from bridge.core.reconcile import records_to_forget
from bridge.mcp import checks as checks_module
from bridge.mcp import tools as tools_module
from bridge.mcp.checks import CheckRunner
from bridge.mcp.probe import ProbeResult
from bridge.mcp.tools import digest, kv_record
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
        self.declares = True  # the `tools` capability
        self.fails: str | None = None  # tools/list fails, saying this
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
        listed = want_tools and self.declares
        return ProbeResult(
            "passing",
            "ok",
            meta,
            tools=list(self.tools) if listed and not self.fails else None,
            tools_error=self.fails if listed else None,
            tools_declared=self.declares,
        )


class ReceivedWrites(FakeConsul):
    """A tool record's put lands when `land` is set, whether the bridge still waits for it
    or not: Consul applies a request it has received."""

    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.received, self.land = asyncio.Event(), asyncio.Event()
        self._landing: set[asyncio.Task[None]] = set()

    async def kv_put(self, key: str, value: bytes) -> None:
        if not key.endswith("/tools"):
            return await super().kv_put(key, value)
        self.received.set()

        async def apply() -> None:
            await self.land.wait()
            await FakeConsul.kv_put(self, key, value)

        landing = asyncio.create_task(apply())
        self._landing.add(landing)
        await asyncio.shield(landing)


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


def runner_for(
    consul: FakeConsul, probe: FakeProbe, metas: list[dict[str, str]], interval: float = 300
) -> CheckRunner:
    consul.services[SID] = own_service("mcp-a", 11100)
    return CheckRunner(
        consul,
        on_meta=lambda sid, meta: metas.append(meta),
        health_of=lambda _: None,
        prober=probe,
        tools_interval=interval,
    )


async def test_a_server_that_no_longer_declares_tools_loses_its_inventory() -> None:
    consul, probe, metas = FakeConsul("n1"), FakeProbe(), list[dict[str, str]]()
    runner = runner_for(consul, probe, metas)
    deletes: list[str] = []
    real_delete = consul.kv_delete

    async def counting_delete(key: str, *, recurse: bool = False) -> None:
        deletes.append(key)
        await real_delete(key, recurse=recurse)

    consul.kv_delete = counting_delete  # type: ignore[method-assign]
    try:
        runner.sync({SID: target()})
        await settle()
        assert KEY in consul.kv and metas[-1]["mcp_tools"] == "1"
        probe.declares = False  # a new version of the server, without tools
        runner.kick(SID)
        await settle()
        assert KEY not in consul.kv, "the old inventory stayed in KV"
        assert "mcp_tools" not in metas[-1] and "mcp_tools_hash" not in metas[-1]
        assert metas[-1]["mcp_server_name"] == "srv"  # the rest of the probe's meta stays
        runner.kick(SID)  # known gone: not deleted at every probe
        await settle()
        assert deletes == [KEY]
        probe.declares = True  # tools again: listed at the next probe, not an interval later
        runner.kick(SID)
        await settle()
        assert KEY in consul.kv and metas[-1]["mcp_tools"] == "1"
    finally:
        await runner.close()


async def test_a_record_left_by_an_earlier_run_goes_when_the_server_has_no_tools() -> None:
    consul, probe, metas = FakeConsul("n1"), FakeProbe(), list[dict[str, str]]()
    consul.kv[KEY] = b"{}"  # written before the agent restarted
    probe.declares = False
    runner = runner_for(consul, probe, metas)
    try:
        runner.sync({SID: target()})
        await settle()
        assert KEY not in consul.kv and "mcp_tools" not in metas[-1]
    finally:
        await runner.close()


@pytest.mark.parametrize(("interval", "retry_after"), [(300, 60), (20, 20)])
async def test_a_failed_listing_is_logged_and_retried_after_a_while_not_at_every_probe(
    interval: float, retry_after: float
) -> None:
    consul, probe, metas = FakeConsul("n1"), FakeProbe(), list[dict[str, str]]()
    probe.fails = "tools/list failed: HTTP 500"
    runner = runner_for(consul, probe, metas, interval)
    try:
        with capture_logs() as logs:
            runner.sync({SID: target()})
            await settle()
            runner.kick(SID)
            await settle()
        assert probe.asked == [True, False], "listed again at the very next probe"
        failed = [e for e in logs if e["event"] == "tools_list_failed"]
        assert failed == [
            {
                "event": "tools_list_failed",
                "log_level": "warning",
                "container": "mcp-a",
                "service": "a",
                "service_id": SID,
                "error": "tools/list failed: HTTP 500",
            }
        ]
        due = runner._checks[SID].tools_due - time.monotonic()
        assert retry_after - 1 < due <= retry_after
        assert min(interval, checks_module.TOOLS_RETRY) == retry_after
        assert consul.kv == {}
    finally:
        await runner.close()


async def test_a_stopped_check_has_ended_only_once_its_kv_write_has_landed() -> None:
    consul, probe = ReceivedWrites("n1"), FakeProbe()
    runner = runner_for(consul, probe, [])
    try:
        runner.sync({SID: target()})
        await asyncio.wait_for(consul.received.wait(), 5)  # the put is on its way
        runner.sync({})  # the service went
        stopped = asyncio.create_task(runner.stopped())
        await settle()
        assert not stopped.done(), "said stopped while its write could still land"
        consul.land.set()
        await asyncio.wait_for(stopped, 5)
        assert KEY in consul.kv  # landed before: a delete from now on is final
    finally:
        await runner.close()
