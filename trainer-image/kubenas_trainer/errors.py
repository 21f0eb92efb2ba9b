"""Failures the trainer reports: each carries the README's reason and exit code.

The CLI turns any of these into a Failed result document, one stderr line and the
exit code, so every module raises these instead of printing or exiting itself.
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base of the reported failures; `message` is kept to one line."""

    reason = "InternalError"
    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line: the message goes into a one-line stderr report and a termination message.
        self.message = " ".join(str(message).split())
        super().__init__(self.message)


class InternalError(TrainerError):
    """An unexpected exception: a bug in the trainer."""

    reason = "InternalError"
    exit_code = 1


class InvalidArguments(TrainerError):
    """Bad command-line flags."""

    reason = "InvalidArguments"
    exit_code = 2


class InvalidArchitecture(TrainerError):
    """The architecture JSON is malformed or breaks the contract's rules."""

    reason = "InvalidArchitecture"
    exit_code = 3


class DataNotFound(TrainerError):
    """The dataset directory or its files are missing or unreadable."""

    reason = "DataNotFound"
    exit_code = 4


class Diverged(TrainerError):
    """The training loss became NaN or infinite."""

    reason = "Diverged"
    exit_code = 5


class OutOfMemory(TrainerError):
    """The child does not fit in the device's memory (e.g. CUDA out of memory)."""

    reason = "OutOfMemory"
    exit_code = 6


class ModelNotSaved(TrainerError):
    """--save-model: the state_dict could not be written (no volume there, no space, read-only)."""

    reason = "ModelNotSaved"
    exit_code = 7
