"""The gateway's server behind the stdio bridge's endpoint (bridge/gateway/backend.py),
with in-memory upstreams: the union listed to clients of both eras, calls routed and
answered under the client's own id, a call not delivered tried on another instance and
one delivered never sent again, sessions sticking to their instance, a client's
cancellation reaching the upstream call, list changes told to listening clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.consul.catalog import Instance
from bridge.gateway.backend import GatewayServer, gateway_handshake
from bridge.gateway.breaker import State
from bridge.gateway.catalog import View
from bridge.gateway.names import union
from bridge.gateway.upstream import CANCEL_UPSTREAM, Failed, NotDelivered
from bridge.mcp.stdio.endpoint import ServeRules, StdioEndpoint
from bridge.mcp.wire import CLIENT_CAPABILITIES_KEY, PROTOCOL_VERSION_KEY
from tests.unit.mcp.test_stdio_modern_adapt import wait_until

JSON_ONLY = {"Content-Type": "application/json", "Accept": "application/json"}
MODERN = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "MCP-Protocol-Version": "2026-07-28",
}


def instance(sid: str, service: str = "time", health: str = "passing") -> Instance:
    return Instance(
        service=service, service_id=sid, node="n", address="127.0.0.1", port=1, health=health,
        transport="streamable-http", path="/mcp", protocol="2025-11-25", tools=None,
        bridge_node="n", url=f"http://{sid}/mcp",
    )  # fmt: skip


class FakeUpstreams:
    """Each instance answers as `behaviour[sid]` says: "ok", "refuse" (not delivered),
    "break" (delivered, then nothing), "hang"."""

    def __init__(self) -> None:
        self.behaviour: dict[str, str] = {}
        self.calls: list[tuple[str, Hashable, dict[str, Any]]] = []
        self.cancelled: list[tuple[str, Any]] = []
        self.ended: list[Hashable] = []

    async def call(
        self,
        inst: Instance,
        message: dict[str, Any],
        session: Hashable,
        tell: Any,
        input_schema: Any = None,
    ) -> dict[str, Any]:
        self.calls.append((inst.service_id, session, message))
        how = self.behaviour.get(inst.service_id, "ok")
        if how == "refuse":
            raise NotDelivered(f"{inst.service_id}: cannot connect")
        if how == "break":
            raise Failed(f"{inst.service_id}: the answer broke off")
        if how == "explode":
            raise RuntimeError("a fault of the gateway's own")
        if how == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError as exc:
                self.cancelled.append((inst.service_id, exc.args))
                raise
        tell({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}})
        text = f"{inst.service_id} ran {message['params']['name']}"
        return {
            "jsonrpc": "2.0",
            "id": message["id"],
            "result": {"content": [{"type": "text", "text": text}]},
        }

    def end(self, session: Hashable) -> None:
        self.ended.append(session)

    def forget(self, alive: Any) -> None:
        self.alive = set(alive)


ECHO = {"name": "echo", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}}


def view_of(*instances: Instance) -> View:
    grouped: dict[str, tuple[Instance, ...]] = {}
    for i in instances:
        grouped[i.service] = (*grouped.get(i.service, ()), i)
    return View(grouped, {})


@asynccontextmanager
async def gateway(
    *instances: Instance, call_timeout: float = 30
) -> AsyncIterator[tuple[TestClient, GatewayServer, FakeUpstreams]]:
    upstreams = FakeUpstreams()
    server = GatewayServer(upstreams, timeout=call_timeout)  # type: ignore[arg-type]
    server.update(view_of(*instances), union({i.service: [ECHO] for i in instances}))
    endpoint = StdioEndpoint(ServeRules())
    endpoint.serve(server, gateway_handshake())
    app = web.Application()
    endpoint.add_routes(app)
    async with TestClient(TestServer(app, handler_cancellation=True)) as client:
        yield client, server, upstreams


async def post(client: TestClient, body: dict[str, Any], **headers: str) -> Any:
    response = await client.post("/mcp", data=json.dumps(body), headers={**JSON_ONLY, **headers})
    return response, await response.json()


async def session_of(client: TestClient, version: str = "2025-06-18") -> str:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t"}}
    response, body = await post(
        client, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
    )
    assert body["result"]["protocolVersion"] == version  # any handshake revision is served
    assert body["result"]["serverInfo"]["name"] == "mcp-bridge-gateway"
    return str(response.headers["Mcp-Session-Id"])


def call(rid: Any, name: str = "time__echo") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": name, "arguments": {}},
    }


def modern(method: str, rid: Any = 7, **params: Any) -> dict[str, Any]:
    meta = {PROTOCOL_VERSION_KEY: "2026-07-28", CLIENT_CAPABILITIES_KEY: {}}
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {**params, "_meta": meta}}


async def test_the_union_is_listed_to_clients_of_both_eras() -> None:
    async with gateway(instance("h1:time"), instance("h1:git", "git")) as (client, _, _):
        sid = await session_of(client)
        _, listed = await post(
            client, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, **{"Mcp-Session-Id": sid}
        )
        names = [t["name"] for t in listed["result"]["tools"]]
        assert names == ["git__echo", "time__echo"]
        assert listed["result"]["tools"][0]["annotations"] == {"readOnlyHint": True}
        _, found = await post(
            client, modern("tools/list"), **MODERN, **{"Mcp-Method": "tools/list"}
        )
        assert [t["name"] for t in found["result"]["tools"]] == names
        assert found["result"]["resultType"] == "complete"


async def test_calls_spread_over_instances_and_a_session_sticks_to_its_own() -> None:
    async with gateway(instance("h1:time"), instance("h2:time")) as (client, _, upstreams):
        hit = []
        for n in range(4):  # fresh sessions, one call each: spread in turn
            sid = await session_of(client)
            _, answer = await post(client, call(f"c{n}"), **{"Mcp-Session-Id": sid})
            assert answer["id"] == f"c{n}"  # the client's own id
            hit.append(answer["result"]["content"][0]["text"].split()[0])
        assert sorted(hit) == ["h1:time", "h1:time", "h2:time", "h2:time"]
        sid = await session_of(client)
        first = None
        for n in range(4):  # one session: one instance
            _, answer = await post(client, call(n), **{"Mcp-Session-Id": sid})
            where = answer["result"]["content"][0]["text"].split()[0]
            first = first or where
            assert where == first
        assert [c[2]["params"]["name"] for c in upstreams.calls] == ["echo"] * 8  # its own name


async def test_a_call_not_delivered_goes_to_another_and_a_delivered_one_never_does() -> None:
    async with gateway(instance("h1:time"), instance("h2:time")) as (client, server, upstreams):
        upstreams.behaviour = {"h1:time": "refuse", "h2:time": "ok"}
        for n in range(3):
            _, answer = await post(
                client,
                modern("tools/call", n, name="time__echo"),
                **MODERN,
                **{"Mcp-Method": "tools/call"},
            )
            assert answer["result"]["content"][0]["text"].startswith("h2:time")
        upstreams.behaviour = {"h1:time": "break", "h2:time": "break"}
        upstreams.calls.clear()
        _, answer = await post(
            client,
            modern("tools/call", 9, name="time__echo"),
            **MODERN,
            **{"Mcp-Method": "tools/call"},
        )
        assert (
            answer["id"] == 9
            and "it may have run, so it was not sent again" in answer["error"]["message"]
        )
        assert len(upstreams.calls) == 1  # never a second try
        assert server.outcomes["h1:time"].not_delivered >= 1


async def test_an_unknown_tool_and_no_instance_are_errors_that_say_so() -> None:
    async with gateway(instance("h1:time"), instance("h2:time", health="critical")) as (
        client,
        _,
        upstreams,
    ):
        _, answer = await post(
            client,
            modern("tools/call", 1, name="nope__x"),
            **MODERN,
            **{"Mcp-Method": "tools/call"},
        )
        assert answer["error"]["code"] == -32602 and "unknown tool" in answer["error"]["message"]
        upstreams.behaviour = {"h1:time": "refuse"}
        _, answer = await post(
            client,
            modern("tools/call", 2, name="time__echo"),
            **MODERN,
            **{"Mcp-Method": "tools/call"},
        )
        assert (
            "every instance of time failed to take the call: h1:time" in answer["error"]["message"]
        )


async def test_a_clients_cancellation_reaches_the_upstream_call() -> None:
    async with gateway(instance("h1:time")) as (client, server, upstreams):
        upstreams.behaviour = {"h1:time": "hang"}
        sid = await session_of(client)
        posting = asyncio.ensure_future(post(client, call("slow"), **{"Mcp-Session-Id": sid}))
        await wait_until(lambda: upstreams.calls)
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": "slow"},
        }
        response = await client.post(
            "/mcp", data=json.dumps(cancel), headers={**JSON_ONLY, "Mcp-Session-Id": sid}
        )
        assert response.status == 202
        _, answer = await asyncio.wait_for(posting, 10)
        assert answer["error"]["code"] == -32800
        assert upstreams.cancelled == [("h1:time", (CANCEL_UPSTREAM,))]
        assert server.outcomes["h1:time"].cancelled == 1 and not server.balancer.in_flight


async def test_a_hung_instance_times_out_and_the_call_is_cancelled_there() -> None:
    async with gateway(instance("h1:time"), call_timeout=0.2) as (client, _, upstreams):
        upstreams.behaviour = {"h1:time": "hang"}
        _, answer = await post(
            client,
            modern("tools/call", 1, name="time__echo"),
            **MODERN,
            **{"Mcp-Method": "tools/call"},
        )
        assert (
            answer["error"]["code"] == -32002
            and "did not answer within" in answer["error"]["message"]
        )
        await asyncio.sleep(0)
        assert upstreams.cancelled == [("h1:time", (CANCEL_UPSTREAM,))]


async def test_a_change_of_the_union_is_told_to_listening_clients_and_a_session_end_upstream() -> (
    None
):
    async with gateway(instance("h1:time")) as (client, server, upstreams):
        sid = await session_of(client)
        stream = await client.get(
            "/mcp", headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid}
        )
        await wait_until(lambda: server._listening)
        added = instance("h1:git", "git")
        server.update(view_of(instance("h1:time"), added), union({"time": [ECHO], "git": [ECHO]}))
        line = b""
        while not line.startswith(b"data:"):
            line = (await asyncio.wait_for(stream.content.readline(), 10)).strip()
        assert json.loads(line[5:])["method"] == "notifications/tools/list_changed"
        stream.close()
        await client.delete("/mcp", headers={"Mcp-Session-Id": sid})
        assert sid in upstreams.ended


async def test_a_request_state_goes_back_to_the_instance_that_issued_it() -> None:
    async with gateway(instance("h1:time"), instance("h2:time")) as (_, server, _):
        answer = {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {"resultType": "input_required", "requestState": "s"},
        }
        wrapped = server._wrap_state(answer, instance("h2:time"))
        state = wrapped["result"]["requestState"]
        params = {"name": "echo", "requestState": state}
        assert server._unwrap_state(params) == "h2:time" and params["requestState"] == "s"


async def test_the_gateways_status_and_metrics_show_each_instance() -> None:
    from bridge.gateway.serve import Gateway
    from tests.builders import make_settings

    gateway = Gateway(make_settings(), consul=object())
    gateway.server.upstreams = FakeUpstreams()  # type: ignore[assignment]
    one = instance("h1:time")
    gateway.catalog.view = view_of(one)
    gateway.server.update(gateway.catalog.view, union({"time": [ECHO]}))
    async with TestClient(TestServer(gateway.app())) as client:
        body = modern("tools/call", 1, name="time__echo")
        response = await client.post(
            "/mcp", data=json.dumps(body), headers={**MODERN, "Mcp-Method": "tools/call"}
        )
        assert "result" in await response.json()
        status = await (await client.get("/v1/status")).json()
        (row,) = status["services"][0]["instances"]
        assert row["id"] == "h1:time" and row["calls"]["ok"] == 1 and row["breaker"] == "closed"
        metrics = await (await client.get("/metrics")).text()
        assert (
            'mcp_bridge_gateway_calls_total{instance="h1:time",outcome="ok",service="time"} 1.0'
            in metrics
        )
        assert "mcp_bridge_gateway_tools 1.0" in metrics


async def test_a_client_that_leaves_mid_call_releases_the_instance_in_either_era() -> None:
    async with gateway(instance("h1:time")) as (client, server, upstreams):
        upstreams.behaviour = {"h1:time": "hang"}
        server.balancer.breakers["h1:time"].state = State.HALF_OPEN  # its one trial call
        headers = {**MODERN, "Mcp-Method": "tools/call"}
        body = json.dumps(modern("tools/call", 1, name="time__echo"))
        leaving = asyncio.ensure_future(
            client.post("/mcp", data=body, headers={**JSON_ONLY, **headers})
        )
        await wait_until(lambda: upstreams.calls)
        leaving.cancel()  # a 2026-07-28 client closes its stream: its cancellation
        await asyncio.gather(leaving, return_exceptions=True)
        await wait_until(lambda: upstreams.cancelled)
        assert upstreams.cancelled == [("h1:time", (CANCEL_UPSTREAM,))]
        await wait_until(lambda: not server.balancer.in_flight)
        assert server.balancer.breakers["h1:time"].trial is False  # the trial given back
        assert server.outcomes["h1:time"].cancelled == 1
        sid = await session_of(client)
        leaving = asyncio.ensure_future(post(client, call("h"), **{"Mcp-Session-Id": sid}))
        await wait_until(lambda: len(upstreams.calls) == 2)
        leaving.cancel()  # a handshake-era client goes away: not a cancellation upstream
        await asyncio.gather(leaving, return_exceptions=True)
        await wait_until(lambda: len(upstreams.cancelled) == 2)
        assert upstreams.cancelled[1] == ("h1:time", ())
        await wait_until(lambda: not server.balancer.in_flight)


async def test_a_fault_of_the_gateways_own_is_an_answer_and_a_failure() -> None:
    async with gateway(instance("h1:time")) as (client, server, upstreams):
        upstreams.behaviour = {"h1:time": "explode"}
        headers = {**MODERN, "Mcp-Method": "tools/call"}
        _, answer = await post(client, modern("tools/call", 1, name="time__echo"), **headers)
        assert answer["id"] == 1 and "RuntimeError" in answer["error"]["message"]
        assert server.outcomes["h1:time"].failed == 1 and not server.balancer.in_flight
