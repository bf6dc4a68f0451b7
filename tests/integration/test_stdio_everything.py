"""The reference `server-everything` (npm) asking its clients things and telling them
things through the bridge, with several clients on its one process: a sampling request
reaches the client whose call caused it and that can answer, and is refused with a reason
for the others; log messages and resource updates reach the sessions that asked for them,
and not the others."""

from __future__ import annotations

import asyncio
from typing import Any

import mcp_types as types
import pytest
from mcp import Client

from tests.integration.conftest import Bridge, wait_for
from tests.integration.test_stdio_agent import passing, url_of
from tests.integration.test_stdio_reference import run_npm, text_of

pytestmark = pytest.mark.usefixtures("services")

URI = "demo://resource/dynamic/text/1"


def test_server_requests_log_messages_and_updates_reach_the_right_clients(
    bridge: Bridge, mcp_server_npm_image: str
) -> None:
    bridge.agent.start()
    run_npm(bridge, mcp_server_npm_image, "everything")
    passing(bridge, "everything")
    url = url_of(bridge, "everything")
    prompts: list[str] = []
    logs: dict[str, list[str]] = {"a": [], "b": []}
    updates: dict[str, list[str]] = {"a": [], "b": []}
    heard_by_a = {"log": asyncio.Event(), "update": asyncio.Event()}

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
        prompts.append(str(params.messages[0].content.text))  # type: ignore[union-attr]
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by client a"),
            model="a-test-model",
        )

    def heard(who: str) -> tuple[Any, Any]:
        async def logged(params: types.LoggingMessageNotificationParams) -> None:
            logs[who].append(str(params.data))
            if who == "a":
                heard_by_a["log"].set()

        async def handle(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                updates[who].append(str(message.params.uri))
                if who == "a":
                    heard_by_a["update"].set()

        return logged, handle

    async def main() -> dict[str, Any]:
        a_logged, a_handle = heard("a")
        b_logged, b_handle = heard("b")
        async with (
            Client(url, mode="legacy", sampling_callback=sampling, logging_callback=a_logged,
                   message_handler=a_handle) as a,
            Client(url, mode="legacy", logging_callback=b_logged, message_handler=b_handle) as b,
            Client(url) as modern,  # 2026-07-28, adapted by the bridge
        ):  # fmt: skip
            names = {t.name for t in (await a.list_tools()).tools}
            # registered by the server only because the bridge's handshake declared sampling
            assert "trigger-sampling-request" in names
            asked = {"prompt": "a question for a", "maxTokens": 10}
            out: dict[str, Any] = {
                "a": text_of(await a.call_tool("trigger-sampling-request", asked))
            }
            for who, client in (("b", b), ("modern", modern)):
                result = await client.call_tool("trigger-sampling-request", {"prompt": who})
                out[who] = (result.is_error, text_of(result))

            await b.set_logging_level("emergency")  # b: almost nothing
            await a.set_logging_level("debug")  # a: everything
            await a.call_tool("toggle-simulated-logging", {})
            await a.subscribe_resource(URI)  # the server acknowledges it in a log message
            await a.call_tool("toggle-subscriber-updates", {})
            async with asyncio.timeout(30):  # the server's simulations tick every 5 s
                await heard_by_a["update"].wait()
                await heard_by_a["log"].wait()
            out["modern news"] = await modern_news()
            return out

    async def modern_news() -> tuple[list[str], list[str]]:
        """A 2026-07-28 client: the resource it listens to, and logs for a request that
        opts in (the server's simulated logging, every 5 s, during an 8 s call)."""
        logged: list[str] = []

        async def log(params: types.LoggingMessageNotificationParams) -> None:
            logged.append(str(params.data))

        async with (
            Client(url, log_level="debug", logging_callback=log) as modern,
            modern.listen(resource_subscriptions=[URI]) as subscription,
        ):
            assert subscription.honored.resource_subscriptions == [URI]
            await modern.call_tool("trigger-long-running-operation", {"duration": 8, "steps": 2})
            async with asyncio.timeout(30):
                change = await anext(aiter(subscription))
        return logged, [str(getattr(change, "uri", change))]

    out = asyncio.run(main())
    assert "sampled by client a" in out["a"] and prompts == [
        "Resource trigger-sampling-request context: a question for a"
    ]
    assert out["b"][0] and "did not declare the sampling capability" in out["b"][1], out["b"]
    assert out["modern"][0] and "handshake era" in out["modern"][1], out["modern"]
    assert set(updates["a"]) == {URI} and updates["b"] == []
    assert any("Received Subscribe Resource request" in said for said in logs["a"])
    # b asked for emergency only: the subscribe acknowledgement (info) never reached it
    assert not any("Received Subscribe Resource request" in said for said in logs["b"])
    modern_logs, modern_updates = out["modern news"]
    assert modern_logs and modern_updates == [URI], out["modern news"]
    wait_for("still passing", lambda: bridge.check("everything")["Status"] == "passing")
