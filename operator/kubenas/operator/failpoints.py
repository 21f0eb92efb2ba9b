"""Failpoints: named places in the operator where a test makes it die at once, so the
windows where a crash is most dangerous are hit on purpose, not by luck.

Test-only: `KUBENAS_FAILPOINTS=name[@n],...` (read at start) makes the n-th pass (default
the first) through `failpoint(name)` end the process with `os._exit` — no cleanup, no
flush, like SIGKILL. Unset, a failpoint is a set lookup.
"""

from __future__ import annotations

import os
import sys

EXIT_CODE = 86  # how a test tells a failpoint's exit from a crash
NAMES = (
    "after-trial-created",  # a NASTrial exists, its Job does not yet
    "after-result-recorded",  # a verdict is in a NASTrial's status, the engine not yet told
    "in-policy-update",  # the engine updated its policy; the checkpoint is not written
    "after-checkpoint",  # the checkpoint is written; the next child not yet created
)


def _parse(setting: str) -> dict[str, int]:
    armed = {}
    for item in filter(None, (part.strip() for part in setting.split(","))):
        name, _, count = item.partition("@")
        if name not in NAMES:
            raise ValueError(f"KUBENAS_FAILPOINTS: unknown failpoint {name!r}; known: {', '.join(NAMES)}")
        armed[name] = int(count or 1)
    return armed


_armed = _parse(os.environ.get("KUBENAS_FAILPOINTS", ""))


def failpoint(name: str) -> None:
    if name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] <= 0:
        print(f"kubenas: failpoint {name}: exiting now", file=sys.stderr, flush=True)
        os._exit(EXIT_CODE)
