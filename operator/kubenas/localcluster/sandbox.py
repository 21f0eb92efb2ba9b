"""What makes a process a container here: its own mount namespace, where each volume is
bind-mounted at its mountPath (and the termination-message file at its path), a memory
cgroup holding the memory limit (the kernel's OOM killer enforces it), a process group
of its own, and death with the kubelet (PR_SET_PDEATHSIG). Mount namespaces need root."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


@dataclass(frozen=True)
class Mount:
    source: Path  # on the host
    target: str  # in the container
    read_only: bool = False


def prepare_targets(mounts: list[Mount]) -> None:
    """Creates each mount point on the host (an empty folder or file, as the source is):
    bind mounts need one, and creating it inside the namespace would be no different."""
    for mount in mounts:
        target = Path(mount.target)
        if mount.source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def hidden_by(mounts: list[Mount], paths: list[str]) -> list[str]:
    """Those of `paths` that a mount would hide (they lie below its target), outermost only."""
    targets = [mount.target.rstrip("/") + "/" for mount in mounts]
    hidden = sorted({path for path in paths if any(path.startswith(target) for target in targets)})
    return [path for path in hidden if not any(path.startswith(outer.rstrip("/") + "/") for outer in hidden if outer != path)]


def enter(*, mounts: list[Mount], cgroup_procs: Path | None, working_dir: str, image_paths: list[str] = ()) -> None:
    """Runs in the child between fork and exec (subprocess's preexec_fn). `image_paths`
    are the image's files (here: this machine's Python and its import path); those a
    volume hides, as an emptyDir at /tmp hides a project under /tmp, are mounted again."""
    if cgroup_procs is not None:
        cgroup_procs.write_text(str(os.getpid()))
    if mounts:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
        # Every source is opened first: a mount over a folder that holds later sources (an
        # emptyDir at /tmp while the kubelet's folder is under /tmp) would hide them. Opened
        # after unshare: a bind mount from the old namespace's mounts fails (EINVAL).
        kept = hidden_by(mounts, list(image_paths))
        sources = [os.open(mount.source, os.O_PATH | os.O_CLOEXEC) for mount in mounts]
        image = [os.open(path, os.O_PATH | os.O_CLOEXEC) for path in kept]
        for mount, descriptor in zip(mounts, sources):
            source, target = f"/proc/self/fd/{descriptor}".encode(), mount.target.encode()
            _check(_libc.mount(source, target, None, MS_BIND | MS_REC, None), f"bind-mounting {mount.target}")
            if mount.read_only:
                _check(_libc.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
                       f"making {mount.target} read-only")
        for path, descriptor in zip(kept, image):
            os.makedirs(path, exist_ok=True)  # its mount point, inside the volume
            _check(_libc.mount(f"/proc/self/fd/{descriptor}".encode(), path.encode(), None, MS_BIND | MS_REC, None),
                   f"keeping the image's {path} visible")
        for descriptor in sources + image:
            os.close(descriptor)
    os.makedirs(working_dir, exist_ok=True)
    os.chdir(working_dir)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class MemoryCgroup:
    """A memory cgroup (v2, or v1's memory controller) below the kubelet's own, limiting one
    container; None from create() where the kubelet may not make one."""

    def __init__(self, path: Path, *, v2: bool) -> None:
        self.path, self.v2 = path, v2

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> MemoryCgroup | None:
        parent = _own_memory_cgroup()
        if parent is None:
            return None
        folder, v2 = parent
        path = folder / name
        try:
            path.mkdir(exist_ok=True)
            (path / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(limit_bytes))
            if v2:
                (path / "memory.swap.max").write_text("0")
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return cls(path, v2=v2)

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this cgroup."""
        try:
            text = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        except OSError:
            return False
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _own_memory_cgroup() -> tuple[Path, bool] | None:
    """The folder of this process's memory cgroup, and whether it is cgroup v2."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if folder.is_dir() and os.access(folder, os.W_OK):
                return folder, False
    for line in lines:
        if line.startswith("0::"):
            root = Path("/sys/fs/cgroup")
            if not (root / "cgroup.controllers").exists():
                root = root / "unified"
            folder = root / line[3:].lstrip("/")
            enabled = (folder / "cgroup.subtree_control")
            if enabled.exists() and "memory" in enabled.read_text().split() and os.access(folder, os.W_OK):
                return folder, True
    return None
