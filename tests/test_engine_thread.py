"""The operator's engine work off its event loop, and the loop-lag measure."""

from __future__ import annotations

import asyncio
import threading
import time

from prometheus_client import REGISTRY

from kubenas.operator.engine_thread import off_loop, watch_loop_lag


async def test_engine_work_runs_on_its_thread_in_order() -> None:
    seen: list[tuple[int, str]] = []

    def work(index: int) -> int:
        seen.append((index, threading.current_thread().name))
        return index * 2

    answers = await asyncio.gather(*(off_loop(work, index) for index in range(5)))
    assert answers == [0, 2, 4, 6, 8]
    assert [index for index, _ in seen] == list(range(5))  # one thread: submitted order
    assert all(name.startswith("kubenas-engine") for _, name in seen)


async def test_the_loop_keeps_running_while_the_engine_works() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await off_loop(time.sleep, 0.3)  # 300 ms of "engine" work
    ticker.cancel()
    assert ticks >= 10  # the loop ran meanwhile; on the loop itself it would have been 0


async def test_loop_lag_is_measured() -> None:
    def maximum() -> float:
        return REGISTRY.get_sample_value("kubenas_operator_loop_lag_max_seconds") or 0.0

    watcher = asyncio.create_task(watch_loop_lag())
    await asyncio.sleep(0.12)
    count = REGISTRY.get_sample_value("kubenas_operator_loop_lag_seconds_count") or 0
    time.sleep(0.3)  # a blocked loop
    await asyncio.sleep(0.12)
    watcher.cancel()
    assert (REGISTRY.get_sample_value("kubenas_operator_loop_lag_seconds_count") or 0) > count
    assert maximum() >= 0.2
