"""One agent as a real process (`python -m bridge run`, as a user starts it), and the
polling wait every integration suite uses on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]
WAIT = 60.0  # a liveness bound for polling, not a timing assertion


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float = WAIT, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"gave up waiting for {what}; last saw {last!r}")


@dataclass
class AgentProcess:
    """One `mcp-bridge run`, as a user starts it."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log_offset: int = field(default=0)

    @property
    def node_id(self) -> str:
        return self.env["BRIDGE_NODE_ID"]

    @property
    def http(self) -> str:
        return "http://" + self.env["BRIDGE_HTTP_ADDR"]

    def start(self, wait_ready: bool = True, prefix: Sequence[str] = ()) -> AgentProcess:
        """`prefix` runs the agent under a wrapper, e.g. setpriv to drop capabilities."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "bridge", "run"],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        self.starts += 1
        if wait_ready:
            wait_for("agent ready", self.ready)
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"agent exited with {self.proc.returncode}:\n{self.logs()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(self.http + "/readyz", timeout=2) as r:
                return bool(json.load(r)["ready"])
        except urllib.error.HTTPError:
            return False

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.http + "/v1/status", timeout=10) as r:
            return dict(json.load(r))

    def status_ports(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.http + "/v1/ports", timeout=10) as r:
            return dict(json.load(r))

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == name:
                    found.append(event)
        return found
