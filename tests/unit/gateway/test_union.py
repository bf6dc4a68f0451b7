"""Each service's tools for the union (bridge/gateway/union.py): from a whole KV record of
one of its callable instances, or, where every record is cut (`truncated`) or none is
there yet, listed by the gateway itself once per record digest."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.consul.catalog import Instance
from bridge.gateway.catalog import View
from bridge.gateway.union import Union
from tests.unit.gateway.test_backend import instance
from tests.unit.mcp.test_stdio_modern_adapt import wait_until


async def test_a_whole_record_is_used_and_a_cut_one_is_listed_by_the_gateway() -> None:
    listed: list[str] = []
    rebuilt: list[bool] = []

    async def lister(inst: Instance) -> list[dict[str, Any]]:
        listed.append(inst.service_id)
        return [{"name": "all", "description": "the whole list"}]

    union = Union(lister, lambda: rebuilt.append(True))
    time_, git = instance("h1:time"), instance("h1:git", "git")
    records = {
        "h1:time": {"service_id": "h1:time", "truncated": 0, "tools": [{"name": "now"}]},
        "h1:git": {
            "service_id": "h1:git",
            "truncated": 3,
            "hash": "d1",
            "tools": [{"name": "log"}],
        },
    }
    view = View({"time": (time_,), "git": (git,)}, records)
    assert sorted(union.offered(view)) == ["time__now"]  # git: being listed
    await wait_until(lambda: rebuilt)
    assert sorted(union.offered(view)) == ["git__all", "time__now"]
    union.offered(view)
    assert listed == ["h1:git"]  # once per digest
    view.records["h1:git"]["hash"] = "d2"  # type: ignore[index]
    union.offered(view)
    await wait_until(lambda: len(listed) == 2)
    await union.close()


async def test_a_failed_listing_is_tried_again_with_the_next_view() -> None:
    tries: list[int] = []

    async def lister(inst: Instance) -> list[dict[str, Any]]:
        tries.append(1)
        raise OSError("refused")

    union = Union(lister, lambda: None)
    view = View({"time": (instance("h1:time"),)}, {})
    union.offered(view)
    await wait_until(lambda: tries)
    await asyncio.sleep(0.01)
    union.offered(view)
    await wait_until(lambda: len(tries) == 2)
    await union.close()


async def test_services_whose_names_could_collide_are_left_out() -> None:
    """`a_` + `b` and `a` + `_b` would both be `a___b`: a name with `_` (never a bridge's,
    which are DNS labels) is left out, so no offered name can mean two tools."""

    async def lister(inst: Instance) -> list[dict[str, Any]]:
        return []

    union = Union(lister, lambda: None)
    records = {
        "h1:a_": {"service_id": "h1:a_", "truncated": 0, "tools": [{"name": "b"}]},
        "h1:a": {"service_id": "h1:a", "truncated": 0, "tools": [{"name": "_b"}]},
    }
    view = View({"a_": (instance("h1:a_", "a_"),), "a": (instance("h1:a", "a"),)}, records)
    offered = union.offered(view)
    assert list(offered) == ["a___b"] and offered["a___b"].service == "a"
    alone = View({"a_": view.instances["a_"]}, records)  # without the one it would shadow
    assert union.offered(alone) == {}
    await union.close()
