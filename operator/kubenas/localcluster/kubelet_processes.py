"""The process kubelet's container processes: each runs in a session of its own whose
process group is "the container", is awaited through a pidfd on the event loop (rather
than a thread per child), and ends with a termination message."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path

MAX_TERMINATION_MESSAGE_BYTES = 4096  # what the kubelet keeps of the file
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: the log's last 80 lines, at most 2 KiB
FALLBACK_LOG_BYTES = 2048


class Process:
    """A started container instance: its process group and the future of its exit status
    (negative: killed by that signal), resolved through a pidfd rather than a thread."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._process = process
        self._loop = asyncio.get_running_loop()
        self.exit_status: asyncio.Future[int] = self._loop.create_future()
        self._pidfd = os.pidfd_open(process.pid)
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        self._forget_pidfd()
        self.exit_status.set_result(self._process.wait())
        self.signal_group(signal.SIGKILL)  # the container's other processes die with its main one

    def _forget_pidfd(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def kill(self) -> None:
        """At once, for a closing kubelet."""
        if self.exit_status.done():
            return
        self.signal_group(signal.SIGKILL)
        self._forget_pidfd()
        self.exit_status.set_result(self._process.wait())


def grace_period(pod: dict) -> float:
    """Seconds between SIGTERM and SIGKILL: the deletion's grace period, else the pod's."""
    seconds = pod["metadata"].get("deletionGracePeriodSeconds")
    if seconds is None:
        seconds = pod["spec"].get("terminationGracePeriodSeconds", 30)
    return float(seconds)


def termination_message(path: Path, log_path: Path, *, fallback_to_logs: bool) -> str:
    try:
        with path.open("rb") as handle:
            message = handle.read(MAX_TERMINATION_MESSAGE_BYTES)
    except OSError:
        message = b""
    if not message and fallback_to_logs:
        with log_path.open("rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - FALLBACK_LOG_BYTES))
            tail = handle.read()
        message = b"".join(tail.splitlines(keepends=True)[-FALLBACK_LOG_LINES:])
    return message.decode("utf-8", errors="replace")
