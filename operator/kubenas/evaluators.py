"""How the local runner evaluates a child: the pod template's command as a subprocess,
or a lookup in a NAS-Bench-201 table.

Both return the trainer's result document (see trainer-image/README.md); a child that
produced none gets `failure(reason, message)` with a named reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ctypes
import gzip
import importlib.resources
import io
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from kubenas import spec as specs
from kubenas.expansion import expand
from kubenas.search import Ticket, failure

RESULT_FILE = "result.json"
LOG_FILE = "log.txt"


def _die_with_parent() -> None:
    """Children die with the runner (Linux), so a killed runner leaves no orphan training."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class SubprocessEvaluator:
    """Runs the first container of the pod template as a local process (image ignored):
    its `command` + `args` after `$(VAR)` expansion, its `env`, plus KUBENAS_ARCHITECTURE,
    KUBENAS_TRIAL_INDEX and KUBENAS_RESULT_FILE. `python`/`python3` as the command mean
    this interpreter, so the child sees the same installed packages."""

    trial: specs.Trial
    trials_dir: Path
    threads_per_child: int

    def child_dir(self, index: int) -> Path:
        return self.trials_dir / f"{index:06d}"

    def finished_result(self, index: int) -> dict | None:
        """A successful result a previous run's child left behind (runner killed after
        the child finished, before it was recorded): reused rather than trained again."""
        path = self.child_dir(index) / RESULT_FILE
        if not path.exists():
            return None
        result = read_result(path, exit_code=0)
        return result if result.get("status") == "Succeeded" else None

    def command(self, ticket: Ticket, result_file: Path) -> tuple[list[str], dict[str, str]]:
        container = self.trial.template.spec.containers[0]
        env = {
            "KUBENAS_ARCHITECTURE": json.dumps(ticket.architecture, separators=(",", ":")),
            "KUBENAS_TRIAL_INDEX": str(ticket.index),
            "KUBENAS_RESULT_FILE": str(result_file),
        }
        for variable in container.env:
            env[variable.name] = expand(variable.value, env)
        argv = [expand(part, env) for part in (*container.command, *container.args)]
        if not argv:
            argv = [sys.executable, "-m", "kubenas_trainer"]  # the image's entrypoint, locally
        elif argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        process_env = {**os.environ, "OMP_NUM_THREADS": str(self.threads_per_child), "PYTHONUNBUFFERED": "1", **env}
        return argv, process_env

    async def __call__(self, ticket: Ticket) -> dict:
        directory = self.child_dir(ticket.index)
        directory.mkdir(parents=True, exist_ok=True)
        result_file = directory / RESULT_FILE
        result_file.unlink(missing_ok=True)
        argv, env = self.command(ticket, result_file)
        with open(directory / LOG_FILE, "wb") as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                    env=env, cwd=os.getcwd(), preexec_fn=_die_with_parent,
                    start_new_session=True,  # Ctrl-C reaches the runner alone; it stops children itself
                )
            except OSError as error:
                return failure("StartError", f"cannot run {argv[0]!r}: {error.strerror}")
            try:
                code = await asyncio.wait_for(process.wait(), timeout=self.trial.active_deadline_seconds)
            except asyncio.TimeoutError:
                await _stop(process)
                return failure("DeadlineExceeded", f"ran longer than activeDeadlineSeconds={self.trial.active_deadline_seconds}")
            except asyncio.CancelledError:
                await _stop(process)  # the runner is stopping: the child stays in flight
                raise
        return read_result(result_file, exit_code=code)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


def read_result(path: Path, *, exit_code: int) -> dict:
    """The child's result document, judged with its exit code as Kubernetes would."""
    try:
        with path.open("rb") as handle:  # a byte over the limit is enough to refuse it
            text = handle.read(MAX_RESULT_BYTES + 1).decode(errors="replace")
    except OSError:
        text = None
    if exit_code < 0:
        name = signal.Signals(-exit_code).name if -exit_code in signal.Signals._value2member_map_ else str(-exit_code)
        hint = " (out of memory?)" if -exit_code == signal.SIGKILL else ""
        return failure("Killed", f"killed by signal {name}{hint}")
    return judge_output(text, exit_code=exit_code, source=path.name)


MAX_RESULT_BYTES = 4096  # a result document's limit: what the kubelet keeps of a termination message


def judge_output(text: str | None, *, exit_code: int, source: str) -> dict:
    """A result document from what a child wrote (`text`, None if nothing) and its exit
    code: the local runner reads a file, the operator a pod's termination message."""
    result = None
    if text and len(text.encode(errors="replace")) > MAX_RESULT_BYTES and exit_code == 0:
        return failure("MalformedResult", f"{source} is over {MAX_RESULT_BYTES:,} bytes")
    if text:
        try:
            result = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            result = None
    if exit_code != 0:
        if isinstance(result, dict) and result.get("status") == "Failed":
            return result  # the trainer's own named failure (InvalidArchitecture, Diverged…)
        tail = (text or "").strip().splitlines()[-1:] if result is None else []
        return failure("Error", f"exit code {exit_code}" + (f": {tail[0][:300]}" if tail else ""))
    if not text:
        return failure("MissingResult", f"the child exited 0 but wrote no {source}")
    if not isinstance(result, dict) or result.get("status") != "Succeeded":
        return failure("MalformedResult", f"{source} is not a successful TrialResult")
    return result


def builtin_table(name: str) -> importlib.resources.abc.Traversable:
    """The packaged file of built-in table `name` (a key of spec.BUILTIN_TABLES)."""
    return importlib.resources.files("kubenas") / "data" / specs.BUILTIN_TABLES[name]


def confined_table_path(path: str, *, directory: Path | None) -> Path:
    """Where the operator may read the table `path` (not a built-in one): only under the
    directory its administrator named (`--tabular-dir`), symlinks and `..` resolved
    first. Whoever writes a search must not make the operator read its own files (its
    service-account token) for them."""
    if directory is None:
        known = ", ".join(specs.BUILTIN_PREFIX + name for name in specs.BUILTIN_TABLES)
        raise specs.SpecError(
            f"spec.trial.tabular.path: this operator reads only the built-in tables ({known}); its "
            "administrator can allow CSV tables under one directory with `kubenas operator --tabular-dir`"
        )
    root = Path(os.path.realpath(directory))
    resolved = Path(os.path.realpath(root / path))  # an absolute `path` replaces `root` here
    if not resolved.is_relative_to(root):
        raise specs.SpecError(f"spec.trial.tabular.path: {path!r} is outside the operator's table directory")
    return resolved


def read_table(path: str, metric: str, *, directory: Path | None = None, confined: bool = False) -> dict[str, float]:
    """cell string -> accuracy (a fraction) from `path`: `builtin:NAME` (a gzipped CSV
    shipped in the package) or a CSV file (relative: from the working directory, or when
    `confined`, from `directory`, outside which nothing is read). No message quotes what
    the file holds: a wrong file's first line may be a secret."""
    builtin = path.startswith(specs.BUILTIN_PREFIX)
    if builtin:
        where: object = path
    elif confined:
        where = confined_table_path(path, directory=directory)
    else:
        where = Path(path)
    try:
        with contextlib.ExitStack() as stack:
            if builtin:
                raw = stack.enter_context(builtin_table(path.removeprefix(specs.BUILTIN_PREFIX)).open("rb"))
                handle = stack.enter_context(io.TextIOWrapper(gzip.GzipFile(fileobj=raw), newline=""))
            else:
                handle = stack.enter_context(where.open(newline=""))
            rows = csv.DictReader(handle)
            fields = rows.fieldnames
            if fields is None or "cellstr" not in fields or metric not in fields:
                columns = len(fields or [])
                raise specs.SpecError(
                    f"spec.trial.tabular: {path} is not a table of cells: its first line must name the columns "
                    f"'cellstr' and {metric!r} (it has {columns} column{'s' if columns != 1 else ''})"
                )
            try:
                return {row["cellstr"]: float(row[metric]) / 100.0 for row in rows}
            except (TypeError, ValueError):
                raise specs.SpecError(
                    f"spec.trial.tabular: {path}, line {rows.line_num}: {metric!r} is not a number"
                ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        if builtin:  # a broken install: the package data is missing
            raise specs.SpecError(f"spec.trial.tabular.path: cannot read the built-in table {path}") from None
        why = error.strerror if isinstance(error, OSError) and error.strerror else "not a UTF-8 CSV file"
        hint = "" if confined else f"; relative paths start from the working directory {Path.cwd()}"
        raise specs.SpecError(f"spec.trial.tabular.path: cannot read {path} ({why}){hint}") from None


class TabularEvaluator:
    """Scores NB201 cells from a CSV (a `cellstr` column and the metric in percent), in
    process: a result document with one 'epoch' whose accuracy is the table's."""

    def __init__(self, tabular: specs.Tabular, *, directory: Path | None = None, confined: bool = False) -> None:
        """`confined`: the operator's reading, built-in tables or files under `directory` only."""
        self.table = read_table(tabular.path, tabular.metric, directory=directory, confined=confined)
        self.metric = tabular.metric

    def finished_result(self, index: int) -> None:
        return None

    async def __call__(self, ticket: Ticket) -> dict:
        cell = ticket.architecture["cell"]
        if cell not in self.table:
            return failure("NotInTable", f"cell {cell} is not in the table")
        return {
            "apiVersion": specs.API_VERSION,
            "kind": "TrialResult",
            "status": "Succeeded",
            "validationAccuracy": [self.table[cell]],
            "bestValidationAccuracy": self.table[cell],
            "dataset": f"table:{self.metric}",
        }
