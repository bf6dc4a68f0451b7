"""Record what each engine says, for the unit tests of the Docker adapter.

    .venv/bin/python -m tests.engines.record [SUITE...]  # writes tests/fixtures/engines/*.json

For each engine (the DinD engines bookworm's 20.10, trixie's 26.1, sid's 28.5, and
Podman 4.3 and 5.4 serving Docker's API) it plays one scenario
and keeps the raw `/events` objects and `/containers/json` rows it produced: a container
published with `-P`-style ports and a HEALTHCHECK that turns healthy and then unhealthy
(an exec in between), a network connected and disconnected, a rename, stop, start and
removal, and a container published on IPv6 loopback only. The unit tests parse these with
the adapter, so what differs between engines is pinned down without running them.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import docker

from tests.engines.dind import PODMAN, SUITES, running
from tests.integration.conftest import IMAGE

OUT = Path(__file__).parents[1] / "fixtures" / "engines"
HEALTH = {
    "test": ["CMD", "test", "-f", "/tmp/ok"],
    "interval": 500_000_000,
    "timeout": 1_000_000_000,
    "retries": 1,
}


def wait(what: str, predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def record(suite: str, outer: docker.DockerClient) -> dict[str, Any]:
    with running(suite, outer) as engine:
        assert engine.client is not None
        # At the engine's own API version, as the agent negotiates it: what a newer API
        # adds to or drops from its answers is what the recording is for.
        own = engine.client.version()["ApiVersion"]
        client = docker.DockerClient(base_url=engine.url, timeout=30, version=own)
        client.api.trust_env = False
        api = client.api
        events: list[dict[str, Any]] = []
        stream = api.events(decode=True, filters={"type": ["container", "network"]})
        reader = threading.Thread(target=lambda: events.extend(stream), daemon=True)
        reader.start()
        rows: dict[str, Any] = {}

        def row(container: Any) -> dict[str, Any]:
            return dict(api.containers(all=True, filters={"id": [container.id]})[0])

        web = client.containers.run(
            IMAGE,
            ["sh", "-c", "touch /tmp/ok; exec httpd -f -p 8080"],
            name="rec-web",
            detach=True,
            labels={"mcp.enable": "true", "mcp.port": "8080"},
            ports={"8080/tcp": None},
            healthcheck=HEALTH,
        )

        def health(status: str) -> bool:
            engine.run_healthchecks(web.id)
            # as the inspect says: Podman's listing leaves the health out of Status
            inspected = api.inspect_container(web.id)["State"].get("Health") or {}
            return bool(inspected.get("Status") == status)

        wait("healthy", lambda: health("healthy"))
        rows["published_healthy"] = row(web)
        web.exec_run(["rm", "/tmp/ok"])
        wait("unhealthy", lambda: health("unhealthy"))
        rows["unhealthy"] = row(web)
        net = client.networks.create("rec-net")
        net.connect(web)
        rows["two_networks"] = row(web)
        net.disconnect(web)
        web.rename("rec-renamed")
        web.stop(timeout=1)
        rows["stopped"] = wait("exited", lambda: (r := row(web))["State"] == "exited" and r)
        web.start()
        web.remove(force=True)
        net.remove()
        v6 = client.containers.run(
            IMAGE,
            ["httpd", "-f", "-p", "8080"],
            name="rec-v6",
            detach=True,
            ports={"8080/tcp": ("::1", None)},
        )
        rows["ipv6_only"] = row(v6)
        v6.remove(force=True)
        time.sleep(1)  # the last events arrive
        stream.close()
        version = engine.version
        return {
            "suite": suite,
            "engine": version["Version"],
            "api": version["ApiVersion"],
            "client_api": own,  # the version these rows and events were asked for at
            "version": version,  # GET /version, as the adapter reads it
            "containers": rows,
            "events": events,
        }


def main() -> None:
    outer = docker.from_env()
    OUT.mkdir(parents=True, exist_ok=True)
    for suite in sys.argv[1:] or [*SUITES, *PODMAN]:
        recording = record(suite, outer)
        path = OUT / f"{suite}.json"
        path.write_text(json.dumps(recording, indent=1, sort_keys=True) + "\n")
        print(f"{path}: Engine {recording['engine']} (API {recording['api']}),"
              f" {len(recording['events'])} events")  # fmt: skip


if __name__ == "__main__":
    main()
