"""SIGKILL of the agent at random points of a 100-container burst, several times."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.integration.conftest import Bridge
from tests.integration.world import remove_many, settle, start_many

BURST = 100


@pytest.mark.slow
@pytest.mark.bridge_env({"BRIDGE_PORT_RANGE": "26000-26199"})
def test_sigkill_at_random_points_of_a_100_container_burst(bridge: Bridge) -> None:
    rng = random.Random(20261121)
    names = [f"k{i}" for i in range(BURST)]
    bridge.agent.start()
    starter = threading.Thread(target=start_many, args=(bridge, names))
    starter.start()
    # Kill it three times while the burst is under way, at random moments.
    kills = 0
    while starter.is_alive() and kills < 3:
        time.sleep(rng.uniform(0.2, 1.5))
        bridge.agent.kill()
        kills += 1
        bridge.agent.start(wait_ready=False)
    starter.join()
    assert kills >= 1, "the burst ended before the first kill"
    first = settle(bridge, BURST)

    # Kill during a removal burst too: what goes must go, what stays keeps its port.
    gone = names[::3]
    remover = threading.Thread(target=remove_many, args=(bridge, gone))
    remover.start()
    time.sleep(rng.uniform(0.1, 0.8))
    bridge.agent.kill()
    remover.join()
    bridge.agent.start()
    after = settle(bridge, BURST - len(gone))
    assert after == {n: p for n, p in first.items() if n.removeprefix(bridge.tag) not in gone}
