"""`mcp-bridge gateway` and `mcp-bridge gateway status`, and the gateway's entry for
`client-config --gateway`."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Coroutine
from typing import Any

from bridge.core.config import Settings


def cmd_gateway(settings: Settings) -> int:
    from bridge.gateway.serve import Gateway
    from bridge.surface.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(settings).run(stop)

    try:
        _run(main())
    except OSError as exc:
        print(f"mcp-bridge: gateway: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    """On uvloop where it installs (not Windows): every call is two HTTP hops through this
    loop, and uvloop's takes a quarter off the gateway's CPU per call (docs/benchmarks.md)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def gateway_url(settings: Settings, path: str) -> str:
    host, port = settings.gateway_host_port
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    scheme = "https" if settings.serve_tls_cert else "http"
    return f"{scheme}://{shown}:{port}{path}"


def cmd_gateway_status(settings: Settings, as_json: bool) -> int:
    from bridge.gateway.serve import upstream_tls

    url = gateway_url(settings, "/v1/status")
    try:
        # http or https only: the URL is built from BRIDGE_GATEWAY_ADDR, not taken as given
        request = urllib.request.Request(url)  # noqa: S310
        if settings.serve_token_file is not None:  # status is behind the same token
            token = settings.serve_token_file.read_text().strip()
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=10, context=upstream_tls(settings)
        ) as response:
            report = json.load(response)
    except (urllib.error.URLError, OSError) as exc:
        print(f"mcp-bridge: no gateway answers at {url} ({exc})", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    if report.get("consul_error"):
        print(f"Consul: {report['consul_error']} (serving the last catalog)")
    services = len(report["services"])
    print(f"{report['tools']} tools from {services} services; {report['sessions']} sessions")
    for service in report["services"]:
        print(f"{service['service']}  ({service['tools']} tools)")
        for i in service["instances"]:
            calls = ", ".join(f"{k} {v}" for k, v in i["calls"].items() if v) or "no calls"
            print(
                f"  {i['id']:<36} {i['health']:<8} breaker {i['breaker']:<16}"
                f" in flight {i['in_flight']:<3} {calls}"
            )
    for protected in report["protected"]:
        print(f"protected (MCP authorization, not proxied): {protected}")
    return 0


def gateway_entry(settings: Settings) -> dict[str, Any]:
    """The one `mcpServers` entry: every healthy server through the gateway."""
    entry: dict[str, Any] = {"type": "http", "url": gateway_url(settings, "/mcp")}
    if settings.serve_token_file is not None:
        token = settings.serve_token_file.read_text().strip()
        entry["headers"] = {"Authorization": f"Bearer {token}"}
    return {"mcpServers": {"mcp-gateway": entry}}
