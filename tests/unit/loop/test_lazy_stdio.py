"""The stdio bridge is loaded with the first stdio container (bridge/loop/stdio.py): an
agent serving none does not import it, nothing is built for an empty pass, and the set is
built once and then given every pass, empty ones too, so that it can withdraw."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from bridge.core.model import StdioReading, StdioTarget
from bridge.loop.stdio import KeptHandshakes, LazyStdio, stdio_set
from bridge.mcp.stdio.served import StdioSet
from tests.builders import make_settings

ROOT = Path(__file__).parents[3]


def test_the_agent_and_its_cli_load_without_the_stdio_bridge() -> None:
    code = (
        "import sys, bridge.surface.cli, bridge.loop.agent\n"
        "print(sorted(m for m in sys.modules if m.startswith("
        "('bridge.mcp.stdio', 'bridge.docker.attach', 'mcp_types'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # the serving rules only (read at start), none of the serving
    assert done.stdout.strip() == str(
        ["bridge.mcp.stdio", "bridge.mcp.stdio.http", "bridge.mcp.stdio.mux"]
    )


def test_the_built_set_is_the_real_one() -> None:
    lazy = stdio_set(make_settings(), cast(Any, None), KeptHandshakes())
    assert isinstance(lazy._build(), StdioSet)


async def test_a_set_that_cannot_be_built_holds_back_the_stdio_services_only() -> None:
    calls: list[int] = []

    def build() -> Any:
        calls.append(1)
        raise ImportError("No module named 'bridge.mcp.stdio.served'")

    lazy = LazyStdio(build)
    target = cast(StdioTarget, "target")
    failed = await lazy.sync({"s1": target, "s2": target})
    assert set(failed) == {"s1", "s2"}
    assert "stdio bridge unavailable: ImportError" in failed["s1"]
    assert await lazy.sync({}) == {} and lazy.readings() == {}
    await lazy.sync({"s1": target})
    assert len(calls) == 2  # tried again on the next pass that wants one


class FakeSet:
    def __init__(self) -> None:
        self.synced: list[dict[str, Any]] = []
        self.closed = False

    @property
    def served(self) -> Mapping[str, Any]:
        return {sid: object() for sid in (self.synced[-1] if self.synced else {})}

    async def sync(
        self, desired: Mapping[str, StdioTarget], scope: Collection[str] | None = None
    ) -> dict[str, str]:
        self.synced.append(dict(desired))
        return {}

    def readings(self) -> dict[str, StdioReading]:
        return {"s1": cast(StdioReading, "reading")}

    async def close(self) -> None:
        self.closed = True


async def test_nothing_is_built_until_a_pass_wants_a_stdio_service() -> None:
    built: list[FakeSet] = []

    def build() -> Any:
        built.append(FakeSet())
        return built[-1]

    lazy = LazyStdio(build)
    assert await lazy.sync({}, None) == {}
    assert built == [] and lazy.served == {} and lazy.readings() == {}
    await lazy.close()
    assert built == []

    target = cast(StdioTarget, "target")
    await lazy.sync({"s1": target})
    await lazy.sync({"s1": target})
    await lazy.sync({})  # withdrawn: the built set is told, not skipped
    assert len(built) == 1
    assert built[0].synced == [{"s1": target}, {"s1": target}, {}]
    assert lazy.readings() == {"s1": cast(StdioReading, "reading")}
    await lazy.close()
    assert built[0].closed


def test_an_empty_token_file_stops_the_agent_at_start_not_at_its_first_stdio_container(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    settings = make_settings(serve_token_file=token)
    with pytest.raises(ValueError, match="is empty"):
        stdio_set(settings, cast(Any, None), KeptHandshakes())
