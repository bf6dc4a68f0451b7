"""The layer contracts in pyproject.toml bite: each one fails on a copy of `bridge/` that
breaks it, and the tree as it is passes (scripts/test.sh runs `lint-imports` on it too)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

# A module of a layer, an import it must not make, and the contract that says so.
BREAKS = [
    ("core/model.py", "import bridge.loop.view", "core < adapters < loop < surface"),
    ("labels/parse.py", "import bridge.mcp.probe", "core < adapters < loop < surface"),
    ("consul/catalog.py", "import bridge.mcp.tools", "adapters do not import each other"),
    ("pool/fleet.py", "import bridge.consul.session", "only through the core's Protocols"),
    ("mcp/checks.py", "import bridge.pool.store", "no other adapter reaches into the pool"),
    ("pool/work.py", "import aiohttp", "the core does no I/O of its own"),
    ("gateway/balance.py", "import aiohttp", "the core does no I/O of its own"),
    ("gateway/catalog.py", "import bridge.loop.agent", "core < adapters < loop < surface"),
]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "bridge", tmp_path / "bridge", ignore=shutil.ignore_patterns("*.pyc"))
    return tmp_path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), BREAKS)
def test_an_import_across_a_layer_is_refused(
    tree: Path, module: str, line: str, contract: str
) -> None:
    path = tree / "bridge" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
