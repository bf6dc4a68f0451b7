"""The agent's own HTTP endpoint (BRIDGE_HTTP_ADDR): health, readiness, metrics, status, ports."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.loop.agent import Agent
from bridge.surface.ports import allocation_row, tier_rows


def build_app(agent: Agent) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(_: web.Request) -> web.Response:
        body = {
            "ready": agent.view.ready,
            "docker_connected": agent.view.docker_connected,
            "consul_reachable": agent.view.consul_reachable,
            "first_full_pass_done": agent.view.first_full_pass_done,
            "node_id_conflict": agent.claim.conflict if agent.claim else None,
        }
        return web.json_response(body, status=200 if agent.view.ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=agent.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def status(_: web.Request) -> web.Response:
        return web.json_response(await agent.status())

    async def ports(_: web.Request) -> web.Response:
        if agent.pool is None:
            return web.json_response({"error": "pool not open yet"}, status=503)
        state, layout = agent.pool.state, agent.settings.tier_layout
        now = time.time()
        allocations = state.allocations()
        return web.json_response(
            {
                "range": str(state.port_range),
                "free": state.free_count(),
                "holders": state.holders(),
                "tiers": tier_rows(layout, state.reserved, (a.port for a in allocations)),
                "allocations": [
                    allocation_row(a, now, agent.settings.stale_after, layout) for a in allocations
                ],
            }
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/ports", ports)
    return app


async def serve(agent: Agent, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(agent), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
