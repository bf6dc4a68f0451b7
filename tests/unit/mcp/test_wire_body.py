"""How an answer's body is read (bridge/mcp/wire.py read_body), against a real aiohttp
server: sized, empty, chunked, and over the limit."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.mcp.wire import ProbeFailed, read_body


async def answer(request: web.Request) -> web.StreamResponse:
    body = b"x" * int(request.query["n"])
    if "chunked" not in request.query:
        return web.Response(body=body, status=202 if not body else 200)
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i in range(0, len(body), 7):
        await response.write(body[i : i + 7])
    await response.write_eof()
    return response


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("size", [0, 1, 50])
async def test_a_body_is_read_whole_whatever_its_framing(size: int, chunked: bool) -> None:
    app = web.Application()
    app.router.add_get("/", answer)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        query = f"?n={size}" + ("&chunked=1" if chunked else "")
        async with session.get(server.make_url("/" + query)) as response:
            assert await read_body(response, 100) == b"x" * size
        async with session.get(server.make_url("/" + query)) as response:
            if size > 20:
                with pytest.raises(ProbeFailed, match="over 20 bytes"):
                    await read_body(response, 20)
        async with session.get(server.make_url("/" + query)) as response:
            assert await read_body(response, 20, cut=True) == b"x" * min(size, 20)
