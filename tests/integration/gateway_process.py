"""One `mcp-bridge gateway` as a real process, for the gateway's suites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.agent_process import ROOT, wait_for
from tests.integration.conftest import consul_url, free_tcp_port


@dataclass
class GatewayProcess:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_services(cls, services: list[str], log_path: Path, **env: str) -> GatewayProcess:
        return cls(
            {
                "BRIDGE_CONSUL_URL": consul_url(),
                "BRIDGE_GATEWAY_ADDR": f"127.0.0.1:{free_tcp_port()}",
                "BRIDGE_GATEWAY_SERVICES": ",".join(services),
                "BRIDGE_LOG_FORMAT": "json",
                **env,
            },
            log_path,
        )

    @property
    def base(self) -> str:
        return "http://" + self.env["BRIDGE_GATEWAY_ADDR"]

    @property
    def url(self) -> str:
        return self.base + "/mcp"

    def start(self) -> GatewayProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "gateway"],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        wait_for("gateway up", self.alive)
        return self

    def alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"gateway exited with {self.proc.returncode}:\n{self.logs()[-3000:]}"
            )
        with urllib.request.urlopen(self.base + "/healthz", timeout=5) as response:
            return bool(json.load(response)["alive"])

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/v1/status", timeout=5) as response:
            return dict(json.load(response))

    def calls_of(self, instance: str) -> dict[str, int]:
        for service in self.status()["services"]:
            for row in service["instances"]:
                if row["id"] == instance:
                    return dict(row["calls"])
        return {}

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
