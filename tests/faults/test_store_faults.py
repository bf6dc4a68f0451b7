"""The state file's directory turns read-only; its disk fills up. Both for real: a tmpfs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fill_disk
from tests.integration.conftest import Bridge, http_status, wait_for
from tests.integration.world import settle, start_many


def store_failures(bridge: Bridge) -> list[dict[str, object]]:
    return [e for e in bridge.agent.events("reconcile_failed") if "cannot write" in str(e["error"])]


def still_serving(bridge: Bridge, ports: dict[str, int]) -> None:
    """What the agent holds stays registered and reachable while it cannot write."""
    held = {s["Meta"]["container_name"]: s["Port"] for s in bridge.services().values()}
    for name, port in ports.items():
        assert held.get(name) == port
        assert http_status("127.0.0.1", port) == 404  # busybox httpd, through the forwarder


@pytest.fixture
def store_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "store"
    path.mkdir()
    yield path
    subprocess.run(["umount", str(path)], check=False, capture_output=True)


def make_read_only(path: Path) -> None:
    # A read-only bind mount over the directory: the same files, unwritable, as with a
    # `:ro` volume. (A file system with writers open cannot be remounted read-only, so
    # this is done while no agent runs.)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)


@pytest.mark.slow
def test_store_directory_read_only(bridge: Bridge, store_dir: Path) -> None:
    bridge.agent.env["BRIDGE_STATE_FILE"] = str(store_dir / "state.db")
    bridge.agent.start()
    start_many(bridge, ["a", "b", "c"])
    before = settle(bridge, 3)
    bridge.agent.stop()
    make_read_only(store_dir)
    bridge.run("late")
    bridge.agent.start(wait_ready=False)
    failure = wait_for(
        "a clear store error", lambda: bridge.agent.events("state_store_unavailable")
    )
    assert "Read-only file system" in str(failure[-1]["error"]), failure[-1]
    wait_for("retrying", lambda: len(bridge.agent.events("state_store_unavailable")) >= 3)
    # Alive, not ready, and what the last agent registered stays registered meanwhile.
    assert (
        http_status(
            "127.0.0.1", int(bridge.agent.env["BRIDGE_HTTP_ADDR"].split(":")[1]), "/healthz"
        )
        == 200
    )
    assert not bridge.agent.ready()
    held = {s["Meta"]["container_name"]: s["Port"] for s in bridge.services().values()}
    assert held == before
    subprocess.run(["umount", str(store_dir)], check=True)
    after = settle(bridge, 4, "late registered once writable")
    assert {k: after[k] for k in before} == before


@pytest.mark.slow
def test_disk_full_on_write(bridge: Bridge, tiny_disk: Path) -> None:
    bridge.agent.env["BRIDGE_STATE_FILE"] = str(tiny_disk / "state.db")
    bridge.agent.start()
    start_many(bridge, ["a", "b"])
    before = settle(bridge, 2)
    still_serving(bridge, before)
    filler = fill_disk(tiny_disk)
    try:
        start_many(bridge, [f"late{i}" for i in range(10)])
        failure = wait_for("a clear store error", lambda: store_failures(bridge))[-1]
        assert "full" in str(failure["error"]), failure
        still_serving(bridge, before)
    finally:
        filler.unlink()
    after = settle(bridge, 12, "registered once there is room")
    assert {k: after[k] for k in before} == before
