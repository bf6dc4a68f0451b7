"""A real headless browser for tests: Debian's chromium, driven over the Chrome DevTools
Protocol (CDP) on a websocket with aiohttp (already a dependency), behind a small
synchronous API.

No Playwright or puppeteer: their browser downloads come from CDNs this project cannot
reach. `scripts/install-chromium.sh` installs the system chromium; this module only starts
it, with its own throw-away profile, and stops it.

Chromium is kept off the network: every host but the ones a test names (loopback by
default) resolves to nothing (`--host-resolver-rules`), and background services (updates,
sync, safe browsing) are off.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine
from itertools import count
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

_T = TypeVar("_T")
ROOT = Path(__file__).parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install-chromium.sh"

_FLAGS = [
    "--headless",
    "--no-sandbox",  # needed as root; the browser only visits our own loopback pages
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-device-scale-factor=1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # chromium picks a port and writes DevToolsActivePort
]


class BrowserError(AssertionError):
    """The browser could not be started or did not answer; the message says why."""


class ScriptError(ValueError):
    """JavaScript evaluated in the page threw. A ValueError, so polls (conftest.wait_for)
    take it as "not yet": a page being re-rendered can throw for a moment."""


def install_chromium() -> str:
    """The chromium binary, installed first by scripts/install-chromium.sh if missing."""
    result = subprocess.run(
        [str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise BrowserError(
            f"{INSTALL_SCRIPT.name} could not provide chromium (exit {result.returncode}); "
            f"install Debian's `chromium` or set MCP_BRIDGE_CHROMIUM:\n{result.stderr[-3000:]}"
        )
    return lines[-1]


class Browser:
    """One headless chromium with one page (tab).

    with Browser(binary, workdir) as browser:
        browser.goto("http://127.0.0.1:8500/ui/")
        text = browser.wait_for_text("services listed", lambda t: "consul" in t)
        browser.screenshot(path)
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        width: int = 1280,
        height: int = 800,
        command_timeout: float = 30.0,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.width = width
        self.height = height
        self.command_timeout = command_timeout
        self.hosts = hosts
        self.log_path = workdir / "chromium.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._runner: asyncio.Runner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = count(1)
        self._events: list[dict[str, Any]] = []  # CDP events seen while awaiting replies

    # -- life cycle -------------------------------------------------------------------

    def __enter__(self) -> Browser:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, timeout: float = 60.0) -> None:
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        active_port = profile / "DevToolsActivePort"
        active_port.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    *_FLAGS,
                    f"--user-data-dir={profile}",
                    # IP literals go through these rules too, so name every host to reach
                    "--host-resolver-rules=MAP * ~NOTFOUND"
                    + "".join(f", EXCLUDE {host}" for host in self.hosts),
                    f"--window-size={self.width},{self.height}",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so close() can end its whole process group
            )
        # Chromium writes "<port>\n<browser ws path>" once DevTools listens.
        deadline = time.monotonic() + timeout
        port = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrowserError(
                    f"chromium exited with {self._proc.returncode} at start-up:\n{self.logs()}"
                )
            lines = active_port.read_text().split() if active_port.exists() else []
            if len(lines) >= 2:
                port = lines[0]
                break
            time.sleep(0.1)
        if not port:
            raise BrowserError(f"chromium did not open DevTools within {timeout}s:\n{self.logs()}")
        self._runner = asyncio.Runner()
        self._runner.run(self._connect(f"http://127.0.0.1:{port}", deadline))
        self.send("Page.enable")  # for Page.loadEventFired
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )

    async def _connect(self, devtools: str, deadline: float) -> None:
        # No session-wide total time-out: it would also bound the websocket's life.
        self._session = aiohttp.ClientSession()
        pages: list[dict[str, Any]] = []
        while not pages:
            async with self._session.get(
                devtools + "/json/list", timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                pages = [t for t in await response.json() if t.get("type") == "page"]
            if not pages:
                if time.monotonic() > deadline:
                    raise BrowserError(f"chromium has no page to drive:\n{self.logs()}")
                await asyncio.sleep(0.1)
        # max_msg_size=0: screenshots arrive as one large base64 message
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    def close(self) -> None:
        if self._runner is not None:
            try:
                self._runner.run(self._disconnect())
            finally:
                self._runner.close()
                self._runner = None
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._proc = None

    async def _disconnect(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def logs(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]

    # -- the protocol -----------------------------------------------------------------

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command on the page; its result, or BrowserError with CDP's error."""
        assert self._runner is not None, "browser not started"
        return self._runner.run(self._send(method, params))

    async def _send(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        async with asyncio.timeout(self.command_timeout):
            while True:
                message = await self._ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise BrowserError(
                        f"DevTools connection ended ({message.type.name}) during {method}:\n"
                        f"{self.logs()}"
                    )
                reply = json.loads(message.data)
                if reply.get("id") != ident:
                    if "method" in reply:
                        self._events.append(reply)
                    continue
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return dict(reply.get("result", {}))

    # -- what tests use ---------------------------------------------------------------

    def wait_event(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        """The first CDP event `method` since the last goto (or start): its params."""
        assert self._runner is not None, "browser not started"
        return self._runner.run(self._with_timeout(self._wait_event(method), timeout))

    @staticmethod
    async def _with_timeout(coro: Coroutine[Any, Any, _T], seconds: float) -> _T:
        async with asyncio.timeout(seconds):
            return await coro

    async def _wait_event(self, method: str) -> dict[str, Any]:
        assert self._ws is not None
        while True:
            for event in self._events:
                if event["method"] == method:
                    return dict(event.get("params", {}))
            message = await self._ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise BrowserError(
                    f"DevTools connection ended ({message.type.name}) waiting for {method}"
                )
            event = json.loads(message.data)
            if "method" in event:
                self._events.append(event)

    def goto(self, url: str) -> None:
        """Load url and wait for its load event (a single-page app such as Consul's UI
        goes on rendering after that: poll for what you expect)."""
        self._events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url} failed: {result['errorText']}")
        try:
            self.wait_event("Page.loadEventFired")
        except TimeoutError:
            raise BrowserError(f"{url} did not finish loading:\n{self.logs()}") from None

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise ScriptError(
                f"{expression!r} threw: {details.get('exception', {}).get('description', details)}"
            )
        return result["result"].get("value")

    def url(self) -> str:
        try:
            return str(self.evaluate("location.href"))
        except ScriptError as exc:
            return f"(unknown: {exc})"

    def text(self) -> str:
        """What the page shows as text (`document.body.innerText`: rendered, visible)."""
        try:
            return str(self.evaluate("document.body ? document.body.innerText : ''"))
        except ScriptError as exc:  # e.g. between two documents
            return f"(no text: {exc})"

    def wait_for_text(
        self, what: str, predicate: Callable[[str], bool], timeout: float = 60.0
    ) -> str:
        """Poll the page's text until predicate(text) holds; the text. A bound for
        liveness, not a timing assertion: on time-out the last text is in the error."""
        deadline = time.monotonic() + timeout
        text = ""
        while True:
            text = self.text()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"gave up waiting for the page to show {what} at {self.url()}; "
                    f"it shows:\n{text[:4000]}"
                )
            time.sleep(0.2)

    def click_text(self, selector: str, text: str) -> None:
        """Click the first element matching a CSS selector whose text is `text`."""
        clicked = self.evaluate(
            "(() => {"
            f" const want = {json.dumps(text)};"
            f" for (const el of document.querySelectorAll({json.dumps(selector)})) {{"
            "   if (el.innerText.trim() === want) { el.click(); return true; }"
            " }"
            " return false;"
            "})()"
        )
        if not clicked:
            raise AssertionError(f"no {selector} with text {text!r} at {self.url()}")

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait (bounded) until web fonts are loaded and no CSS transition or animation
        runs, so a screenshot does not catch a tab's underline mid-slide. Only for
        pictures: whether the page settled is returned, never asserted."""
        deadline = time.monotonic() + timeout
        while True:
            quiet = self.evaluate(
                "document.fonts.ready.then(() => new Promise(done =>"
                " requestAnimationFrame(() => requestAnimationFrame(() =>"
                " done(document.getAnimations().every(a => a.playState !== 'running'))))))"
            )
            if quiet or time.monotonic() > deadline:
                return bool(quiet)
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the viewport (width x height), once the page settled."""
        self.settle()
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
