"""500 containers started, stopped and started again in a storm: none lost, none twice."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import Bridge
from tests.integration.world import WORKERS, settle, start_many

STORM = 500


@pytest.mark.slow
@pytest.mark.bridge_env({"BRIDGE_PORT_RANGE": "26200-26999", "BRIDGE_RESYNC_INTERVAL": "10s"})
def test_start_stop_storm_of_500_containers(bridge: Bridge) -> None:
    rng = random.Random(500)
    names = [f"s{i}" for i in range(STORM)]
    bridge.agent.start()
    start_many(bridge, names)
    first = settle(bridge, STORM)
    assert len(set(first.values())) == STORM

    # Stop a random 40% and start them again, interleaved, while the agent keeps up.
    churn = rng.sample(names, STORM * 2 // 5)

    def bounce(name: str) -> None:
        container = bridge.docker.containers.get(bridge.tag + name)
        container.stop(timeout=0)
        container.start()

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(bounce, churn))
    after = settle(bridge, STORM, "all back after the storm")
    assert after == first, "a container's port moved although stop keeps it"

    # And stop a quarter for good: exactly those leave Consul.
    stopped = rng.sample(names, STORM // 4)
    with ThreadPoolExecutor(WORKERS) as pool:
        list(
            pool.map(
                lambda n: bridge.docker.containers.get(bridge.tag + n).stop(timeout=0), stopped
            )
        )
    final = settle(bridge, STORM - len(stopped), "stopped ones withdrawn")
    assert set(final) == set(first) - {bridge.tag + n for n in stopped}
