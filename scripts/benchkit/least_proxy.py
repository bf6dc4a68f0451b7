"""The least a Python proxy of MCP calls can be, for bench_gateway.py's floor: aiohttp on
uvloop, as the gateway is, passing each POST's body and headers to one instance and its
answer back, reading nothing inside. What the gateway adds over this is its own work.

    python scripts/benchkit/least_proxy.py PORT TARGET_URL
"""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
import uvloop
from aiohttp import web

PASSED = ("content-type", "accept", "mcp-protocol-version", "mcp-method", "mcp-name")


async def main(port: int, target: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:

        async def handle(request: web.Request) -> web.Response:
            headers = {k: v for k, v in request.headers.items() if k.lower() in PASSED}
            async with http.post(target, data=await request.read(), headers=headers) as r:
                return web.Response(body=await r.read(), status=r.status, headers={
                    "Content-Type": r.headers.get("Content-Type", "application/json")
                })  # fmt: skip

        app = web.Application()
        app.router.add_post("/mcp", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await stop.wait()
        await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
