"""What every suite shares: the outcome of each test on its item, and a tiny real disk."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# testcontainers starts its reaper (Ryuk) from a public image no registry here serves: off.
# Every container a test starts carries the test label, and the sessions' clean-up removes it.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """`item.rep_call` tells a fixture's teardown whether the test failed (to print logs)."""
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system, to make the disk fill up for real."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(disk: Path) -> Path:
    """Eat every free block of `disk` with one file; returns it (unlink it to free them)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    return filler
