"""`mcp-bridge gateway`: the pieces put together, and served.

Consul's catalog (catalog.py) feeds the union (union.py) and the server the endpoint
serves (backend.py); the endpoint is the stdio bridge's own (mcp/stdio/endpoint.py: the
sessions, both eras, Origin, token), at `/mcp` of BRIDGE_GATEWAY_ADDR, beside the
gateway's `/healthz`, `/metrics` and `/v1/status`. BRIDGE_GATEWAY_ALLOW is checked before
anything is read.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.consul.catalog import Instance
from bridge.consul.client import ConsulClient
from bridge.core.access import Access
from bridge.core.config import Settings
from bridge.gateway.backend import GatewayServer, gateway_handshake
from bridge.gateway.catalog import Catalog, View
from bridge.gateway.metrics import GatewayMetrics
from bridge.gateway.union import Union
from bridge.gateway.upstream import Upstreams
from bridge.mcp.stdio.endpoint import StdioEndpoint
from bridge.mcp.stdio.http import ServeRules, refuse, rpc_error
from bridge.mcp.tools import list_tools
from bridge.mcp.wire import ProbeFailed

log = structlog.get_logger("bridge.gateway")

FORBIDDEN = -32003
BLOCKING_TIMEOUT = 70.0  # the Consul client's timeout: longer than a blocking query's wait
CONSUL_CONNECTIONS = 1000


def read_token(settings: Settings) -> str | None:
    path = settings.serve_token_file
    return (path.read_text().strip() or None) if path is not None else None


def serve_tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.serve_tls_cert is None or settings.serve_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.serve_tls_cert, settings.serve_tls_key)
    return context


def upstream_tls(settings: Settings) -> ssl.SSLContext | None:
    """The bridges' served endpoints may use the certificate the fleet serves with: trust
    it beside the system's authorities."""
    if settings.serve_tls_cert is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(settings.serve_tls_cert)
    return context


class Gateway:
    def __init__(self, settings: Settings, consul: Any = None) -> None:
        self.settings = settings
        token = read_token(settings)
        self.metrics = GatewayMetrics()
        self.upstreams = Upstreams(token=token, tls=upstream_tls(settings))
        self.server = GatewayServer(
            self.upstreams,
            timeout=settings.gateway_timeout,
            ejection=settings.gateway_ejection,
            observe=self.metrics.observe,
        )
        self.union = Union(self._list_tools, self._rebuild)
        # A blocking query per service at once, each held up to its wait: as many
        # connections as that takes, and a timeout longer than the wait.
        self.consul = consul or ConsulClient.from_settings(
            settings, timeout=BLOCKING_TIMEOUT, attempts=1, connections=CONSUL_CONNECTIONS
        )
        self.catalog = Catalog(self.consul, settings.gateway_services, self._view_changed)
        rules = ServeRules(
            path="/mcp",
            max_message=int(settings.stdio_max_message),
            max_sessions=settings.stdio_max_sessions,
            session_idle=settings.stdio_session_idle,
            allowed_origins=frozenset(settings.allowed_origins),
            token=token,
        )
        self.endpoint = StdioEndpoint(rules)
        self.endpoint.serve(self.server, gateway_handshake())
        self.access = Access(settings.gateway_allow)
        self.started = time.time()
        self._listings = itertools.count(1)
        self.metrics.watch(lambda: self.server, lambda: self.catalog.consul_error is None)

    def _view_changed(self, view: View) -> None:
        self.server.update(view, self.union.offered(view))
        self.metrics.forget({i.service_id for g in view.instances.values() for i in g})

    def _rebuild(self) -> None:
        self._view_changed(self.catalog.view)

    async def _list_tools(self, instance: Instance) -> list[dict[str, Any]]:
        """An instance's tools, asked by the gateway itself (its record is cut or none)."""

        session = ("gateway", "tools", next(self._listings))  # its own, ended after

        async def call(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
            ask = {"jsonrpc": "2.0", "id": 0, "method": method, "params": params or {}}
            answer = await self.upstreams.call(instance, ask, session, lambda _: None)
            if not isinstance(answer.get("result"), dict):
                raise ProbeFailed(f"{method}: {answer.get('error') or answer}")
            return dict(answer["result"])

        try:
            async with asyncio.timeout(30):
                return await list_tools(call)
        finally:
            self.upstreams.end(session)

    # ---- HTTP -----------------------------------------------------------------------------

    @web.middleware
    async def _allow(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.access.refuse(request.remote or "", 0) is not None:
            return rpc_error(403, FORBIDDEN, "this address may not use the gateway")
        return await handler(request)

    def app(self) -> web.Application:
        rules = self.endpoint.rules

        async def healthz(_: web.Request) -> web.Response:  # for liveness checks: no details
            return web.json_response({"alive": True, "consul": self.catalog.consul_error is None})

        async def metrics(request: web.Request) -> web.Response:
            refused = refuse(request, rules)  # the same token and Origin as /mcp
            if refused is not None:
                return refused
            return web.Response(
                body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        async def status(request: web.Request) -> web.Response:
            refused = refuse(request, rules)
            if refused is not None:
                return refused
            return web.json_response(self.status())

        app = web.Application(middlewares=[self._allow], client_max_size=0)
        self.endpoint.add_routes(app)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/v1/status", status)
        return app

    def status(self) -> dict[str, Any]:
        view, server, now = self.catalog.view, self.server, time.monotonic()
        services = []
        for name in sorted(view.instances):
            rows = []
            for instance in view.instances[name]:
                breaker = server.balancer.breakers.get(instance.service_id)
                outcomes = server.outcomes.get(instance.service_id)
                rows.append(
                    {
                        "id": instance.service_id,
                        "url": instance.url,
                        "health": instance.health,
                        "protocol": instance.protocol,
                        "protected": instance.protected,
                        "breaker": breaker.shown(now) if breaker else "closed",
                        "in_flight": server.balancer.in_flight.get(instance.service_id, 0),
                        "calls": asdict(outcomes) if outcomes else {},
                    }
                )
            tools = sum(1 for o in server.offered.values() if o.service == name)
            services.append({"service": name, "tools": tools, "instances": rows})
        return {
            "consul_error": self.catalog.consul_error,
            "consul_error_since": self.catalog.consul_error_since,
            "synced": self.catalog.synced.is_set(),
            "tools": len(server.offered),
            "services": services,
            "protected": [i.service_id for i in view.protected()],
            "sessions": len(self.endpoint.sessions),
            "listening": len(server.listening),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set."""
        runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        host, port = self.settings.gateway_host_port
        site = web.TCPSite(runner, host, port, ssl_context=serve_tls(self.settings), backlog=1024)
        following = asyncio.create_task(self.catalog.run(), name="gateway catalog")
        try:
            await site.start()
            log.info("gateway_started", address=self.settings.gateway_addr)
            await stop.wait()
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            await self.union.close()
            await runner.cleanup()
            await self.upstreams.close()
            await self.consul.close()
            log.info("gateway_stopped")
