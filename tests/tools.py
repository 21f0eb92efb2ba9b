"""External tools the tests drive for real (promtool, prometheus, hadolint; the Kubernetes
binaries and helm, which `make tools` builds, come from tests.cluster_harness.tool).
`make test` installs them; where one is missing a test skips with the reason, except
under KUBENAS_REQUIRE_TOOLS=1 (CI), where it fails."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def required() -> bool:
    return os.environ.get("KUBENAS_REQUIRE_TOOLS") == "1"


def missing(reason: str) -> None:
    """Skip (a user's machine) or fail (CI) because a tool is missing."""
    if required():
        pytest.fail(f"{reason} (KUBENAS_REQUIRE_TOOLS=1: `make tools` should have installed it)")
    pytest.skip(reason)


def executable(name: str) -> str:
    """The path of a command on PATH (or next to this Python), else skip/fail."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(os.sys.executable).parent))
    if not found:
        missing(f"{name} is not installed (`make tools` installs it)")
    return found

