"""The engine's CPU work off the operator's event loop, and a measure of that loop's lag.

Sampling bursts, REINFORCE updates and checkpoint serialisation take milliseconds to
seconds; on the event loop they would stall every search's watch events, status writes
and the liveness probe. They run on one worker thread instead: one, so engines never run
at the same time (each update has the cores), and each driver awaits its call, so the
order of asks and tells, and with it exactly-once across restarts, is unchanged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from collections.abc import Callable
from typing import TypeVar

from kubenas.metrics import LOOP_LAG, LOOP_LAG_MAX

T = TypeVar("T")
LAG_PROBE_SECONDS = 0.05

_ENGINE = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubenas-engine")


async def off_loop(function: Callable[..., T], /, *args: object) -> T:
    """`function(*args)` on the engine thread."""
    return await asyncio.get_running_loop().run_in_executor(_ENGINE, functools.partial(function, *args))


async def watch_loop_lag() -> None:
    """Forever: how late a 50 ms sleep wakes, in kubenas_operator_loop_lag_seconds."""
    worst = 0.0
    while True:
        started = time.monotonic()
        await asyncio.sleep(LAG_PROBE_SECONDS)
        lag = max(0.0, time.monotonic() - started - LAG_PROBE_SECONDS)
        LOOP_LAG.observe(lag)
        if lag > worst:
            worst = lag
            LOOP_LAG_MAX.set(worst)
