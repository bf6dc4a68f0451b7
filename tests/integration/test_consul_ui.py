"""What an operator sees: the Consul UI, rendered by a real headless chromium.

The bridge registers an MCP stand-in container; the browser then opens Consul's own UI
(the Ember app at /ui/) and reads what it rendered, as a person would: the service's
instance list, the instance's Health Checks tab and its Tags & Meta tab. Screenshots go
to test-output/consul-ui/ (or $MCP_BRIDGE_TEST_OUTPUT/consul-ui/); with
MCP_BRIDGE_UPDATE_DOCS=1 the Health Checks screenshot also replaces docs/consul-ui.png
(the README's picture; left alone otherwise, so a test run does not dirty the tree).

Routes are Consul 1.8's: /ui/<dc>/services/<name>/instances and
/ui/<dc>/services/<name>/instances/<node>/<service id>/{health-checks,metadata}.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.integration.browser import Browser, install_chromium
from tests.integration.conftest import ROOT, Bridge, consul_get, consul_url, wait_for

SERVICE = "hello-mcp"  # the Consul service name the stand-in gets (label `name`)
DOCS_SCREENSHOT = ROOT / "docs" / "consul-ui.png"

# Reads the rendered DOM, never Consul's API: innerText is what the page shows.
_INSTANCE_ROWS = """
[...document.querySelectorAll('.consul-service-instance-list li')]
  .filter(li => li.querySelector('a[href*="/instances/"]'))
  .map(li => ({
    id: li.querySelector('a[href*="/instances/"]').innerText.trim(),
    href: li.querySelector('a[href*="/instances/"]').getAttribute('href'),
    facts: [...li.querySelectorAll('dl')].map(dl => ({
      kind: dl.className,
      text: dl.querySelector('dd') ? dl.querySelector('dd').innerText.trim() : '',
    })),
  }))
"""
_HEADER = """
({
  title: (document.querySelector('main h1') || {innerText: ''}).innerText.trim(),
  facts: Object.fromEntries([...document.querySelectorAll('main header dl')].map(
    dl => [dl.querySelector('dt').innerText.trim(), dl.querySelector('dd').innerText.trim()])),
  tab: (document.querySelector('[role=tablist] li.selected') || {innerText: ''}).innerText.trim(),
})
"""
_HEALTH_CHECKS = """
[...document.querySelectorAll('li.healthcheck-output')].map(li => ({
  status: [...li.classList].filter(c => c !== 'healthcheck-output').join(' '),
  name: li.querySelector('h3').innerText.trim(),
  fields: Object.fromEntries([...li.querySelectorAll('dl')].map(
    dl => [dl.querySelector('dt').innerText.trim(), dl.querySelector('dd').innerText.trim()])),
}))
"""
# The meta table is virtualised (only rows near the viewport exist), so each call reads
# the rendered rows, then scrolls the table on by half a page (back to the top at the end).
_META_ROWS_AND_SCROLL = """
(() => {
  const body = document.querySelector('table.consul-metadata-list tbody');
  if (!body) return null;
  const rows = [...body.querySelectorAll('tr')]
    .map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()))
    .filter(cells => cells.length === 2);
  const end = body.scrollTop + body.clientHeight >= body.scrollHeight - 1;
  body.scrollTop = end ? 0 : body.scrollTop + Math.max(1, body.clientHeight / 2);
  return rows;
})()
"""
_ERROR_PAGE = "!!document.documentElement && document.documentElement.matches('.template-error')"
_TAGS = """
[...document.querySelectorAll('main section.tags .tag-list dd span')].map(s => s.innerText.trim())
"""


def output_dir() -> Path:
    base = os.environ.get("MCP_BRIDGE_TEST_OUTPUT")
    path = (Path(base) if base else ROOT / "test-output") / "consul-ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; scripts/install-chromium.sh installs it when missing."""
    return install_chromium()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    host = urlsplit(consul_url()).hostname or "127.0.0.1"
    with Browser(chromium, tmp_path / "chromium", hosts=(host,)) as b:
        yield b


def instance_row(browser: Browser, sid: str) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = browser.evaluate(_INSTANCE_ROWS) or []
    return next((r for r in rows if r["id"] == sid), None)


def in_catalog(service: str, sid: str) -> bool:
    """Consul's catalog (what the UI reads, unlike /v1/agent/*) has the instance, passing."""
    return any(
        entry["Service"]["ID"] == sid and all(c["Status"] == "passing" for c in entry["Checks"])
        for entry in consul_get(f"/v1/health/service/{quote(service, safe='')}")
    )


def ui_wait(
    browser: Browser, what: str, predicate: Callable[[], Any], known: Callable[[], bool]
) -> Any:
    """wait_for on the page, showing the page on failure. On the UI's error page (404):
    fail at once when known() (the catalog has the instance, so the UI is wrong), else
    reload and go on waiting (Consul lost it for a moment, e.g. it restarted empty)."""

    def probe() -> Any:
        if browser.evaluate(_ERROR_PAGE):
            if known():
                raise AssertionError(
                    f"the UI shows an error page at {browser.url()}, "
                    "yet Consul's catalog has the instance"
                )
            browser.goto(browser.url())
            return None
        return predicate()

    try:
        return wait_for(what, probe)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- the page at {browser.url()} shows:\n{browser.text()}"
        ) from None


def fact(row: dict[str, Any], kind: str) -> str:
    return " ".join(f["text"] for f in row["facts"] if kind in f["kind"].split())


def test_consul_ui_shows_the_mcp_instance_its_port_health_and_meta(
    bridge: Bridge, browser: Browser, tmp_path: Path
) -> None:
    out = output_dir()
    for old in out.iterdir():
        old.unlink()
    bridge.agent.start()
    bridge.run_mcp_standin(
        "hello",
        tmp_path / "www",
        tags="demo,ui",
        dotted={"name": SERVICE, "meta.team": "platform"},
    )
    # Consul's API first, so the browser has something settled to look at.
    sid = f"{bridge.agent.node_id}:{bridge.tag}hello"
    wait_for("check passing", lambda: (c := bridge.check("hello")) and c["Status"] == "passing")
    svc = wait_for(
        "probe meta written",
        lambda: (s := bridge.service("hello")) and "mcp_server_name" in s["Meta"] and s,
    )
    meta: dict[str, str] = svc["Meta"]
    for key in ("managed_by", "bridge_node", "bridge_fingerprint", "transport", "path"):
        assert key in meta, f"the bridge no longer writes meta {key}: {meta}"
    assert meta["mcp_server_name"] == "cgi-mcp" and meta["team"] == "platform"
    config = consul_get("/v1/agent/self")["Config"]
    node, dc = str(config["NodeName"]), str(config["Datacenter"])
    ui = f"{consul_url()}/ui/{dc}/services"
    address = f"{svc['Address']}:{svc['Port']}"
    # The agent syncs its services to the catalog by itself, a moment later.
    wait_for("the instance in Consul's catalog, passing", lambda: in_catalog(SERVICE, sid))

    def wait(what: str, predicate: Callable[[], Any]) -> Any:
        return ui_wait(browser, what, predicate, lambda: in_catalog(SERVICE, sid))

    try:
        # 1. The service's instance list: our instance, its node, address:port, health.
        browser.goto(f"{ui}/{quote(SERVICE, safe='')}/instances")
        row = wait(
            f"instance {sid} in the UI's list of {SERVICE} instances, with passing checks",
            lambda: (
                (r := instance_row(browser, sid))
                and "All service checks passing" in fact(r, "passing")
                and r
            ),
        )
        assert fact(row, "node") == node, row
        assert fact(row, "address") == address, row
        assert {"mcp", "demo", "ui"} <= set(re.split(r"[,\s]+", fact(row, "tag-list"))), row
        browser.screenshot(out / "1-instances.png")

        # 2. Click through to the instance, as a person would: the Health Checks tab.
        link = f".consul-service-instance-list a[href={json.dumps(row['href'])}]"
        browser.evaluate(f"document.querySelector({json.dumps(link)}).click()")
        header = wait(
            f"the page of instance {sid}",
            lambda: (h := browser.evaluate(_HEADER))["title"] == sid and h["tab"] and h,
        )
        assert header["facts"].get("Service Name") == SERVICE, header
        assert header["facts"].get("Node Name") == node, header
        assert header["tab"] == "Health Checks", header
        assert unquote(browser.url()).endswith(f"/instances/{node}/{sid}/health-checks")
        check = wait(
            f"check {sid}:mcp passing on the Health Checks tab",
            lambda: next(
                (
                    c
                    for c in browser.evaluate(_HEALTH_CHECKS) or []
                    if c["fields"].get("CheckID") == f"{sid}:mcp" and c["status"] == "passing"
                ),
                None,
            ),
        )
        assert check["fields"]["Type"] == "ttl", check
        assert "cgi-mcp" in check["fields"]["Output"], check
        browser.screenshot(out / "2-health-checks.png")

        # 3. The Tags & Meta tab: every meta key and value the bridge wrote, and the tags.
        browser.click_text("[role=tablist] a", "Tags & Meta")
        tags = wait("tags on the Tags & Meta tab", lambda: browser.evaluate(_TAGS))
        assert set(svc["Tags"]) <= set(tags) and {"mcp", "demo", "ui"} <= set(tags), tags
        browser.screenshot(out / "3-tags-meta.png")
        shown: dict[str, str] = {}

        def all_meta_shown() -> bool:
            rows = browser.evaluate(_META_ROWS_AND_SCROLL) or []
            shown.update(dict(rows))
            return all(shown.get(k) == v for k, v in meta.items())

        try:
            wait("every meta key and value on the Tags & Meta tab", all_meta_shown)
        except AssertionError as exc:
            missing = {k: v for k, v in meta.items() if shown.get(k) != v}
            raise AssertionError(
                f"the UI does not show meta {missing}; it shows {shown}\n{exc}"
            ) from None

        # 4. And the UI does not invent instances: a service that does not exist is a 404,
        # with no instance rows (the same reader that found ours finds nothing).
        browser.goto(f"{ui}/{quote(SERVICE, safe='')}-absent/instances")
        browser.wait_for_text("the UI's 404 page", lambda t: "Error 404" in t)
        assert instance_row(browser, sid) is None
    except BaseException:
        with contextlib.suppress(Exception):  # evidence only; the real error follows
            (out / "failure.txt").write_text(f"{browser.url()}\n\n{browser.text()}")
            browser.screenshot(out / "failure.png")
        raise

    if os.environ.get("MCP_BRIDGE_UPDATE_DOCS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(out / "2-health-checks.png", DOCS_SCREENSHOT)
