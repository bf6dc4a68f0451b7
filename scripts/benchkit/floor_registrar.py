"""The floor for the peer comparison: the least a Docker → Consul bridge can be.

    python floor_registrar.py LABEL ADDRESS CONSUL_URL

At start, one listing of the running containers labelled LABEL and one register each;
then, on each container event: `start` → one inspect and one register of its first
published TCP port at ADDRESS; `die` → one deregister. Blocking calls on one thread, no
state kept, no retries, no checks: what any bridge must do, and nothing it should.
"""

from __future__ import annotations

import sys
from typing import Any

import docker
import requests


def service(info: dict[str, Any], address: str) -> dict[str, Any] | None:
    name = str(info.get("Name") or info.get("Names", ["/"])[0]).lstrip("/")
    ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
    for key, bindings in ports.items():
        for binding in bindings or []:
            if key.endswith("/tcp") and binding.get("HostPort"):
                return {"ID": f"floor:{name}", "Name": name, "Address": address,
                        "Port": int(binding["HostPort"])}  # fmt: skip
    return None


def main() -> None:
    label, address, consul = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/")
    api = docker.from_env().api
    http = requests.Session()

    def register(container_id: str) -> None:
        body = service(api.inspect_container(container_id), address)
        if body is not None:
            http.put(f"{consul}/v1/agent/service/register", json=body).raise_for_status()

    events = api.events(decode=True, filters={"type": "container", "label": label})
    for row in api.containers(filters={"label": label}):
        register(row["Id"])
    for event in events:
        action, actor = event.get("Action"), event.get("Actor") or {}
        if action == "start":
            register(actor["ID"])
        elif action == "die":
            name = (actor.get("Attributes") or {}).get("name", "")
            http.put(f"{consul}/v1/agent/service/deregister/floor:{name}")


if __name__ == "__main__":
    main()
