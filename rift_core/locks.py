"""One writer per output: an exclusive lock held for the whole step that writes a file or folder.

`hold(target)` locks `<target>.lock` (beside the target, so it outlives a folder renamed into place) with
the `filelock` package, which uses flock: the kernel lets go of it when the holding process ends, even by
SIGKILL, so a killed run never leaves a held lock behind. After acquiring, the holder writes who it is to
`<target>.lock.owner.json`: the Dagster run id when known (the Pipes child puts it in $RIFT_RUN_ID; rift_core
never imports dagster), the pid and host, the command and since when. A second writer fails at once with
`OutputLocked`, whose message names the holder and the lock, or with `wait=True` queues behind it.

Holding the same target again in the same thread is free (the Pipes child holds a checkpoint while the
trainer it calls holds it too); another thread or process is another writer.
"""
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rift_core.io import tmp_beside

RUN_ID_ENV = "RIFT_RUN_ID"  # the Dagster run a process works for, when it works for one
WAIT_HINT = ("set wait_for_lock to queue behind it (the `rift` resource's wait_for_lock: true in the Launchpad; "
             "--wait-for-lock on python -m rift_core train / generate / evaluate)")


class OutputLocked(RuntimeError):
    """Another process (or thread) is writing this output."""

    def __init__(self, target: Path, lock: Path, holder: str):
        self.target, self.lock, self.holder = target, lock, holder
        super().__init__(f"{target} is being written by {holder}; lock {lock}. One writer per output: wait for "
                         f"that writer to finish or stop it, or {WAIT_HINT}")


def lock_path(target) -> Path:
    target = Path(target).absolute()
    return target.with_name(target.name + ".lock")


def owner_path(target) -> Path:
    return lock_path(target).with_name(lock_path(target).name + ".owner.json")


def holder(target) -> str:
    """Who holds (or last held) the lock on `target`, from its owner record, in words."""
    try:
        rec = json.loads(owner_path(target).read_text())
    except (OSError, ValueError):
        return "another process (it has not written its owner record yet)"
    who = f"Dagster run {rec['run_id']}" if rec.get("run_id") else f"pid {rec.get('pid')} on {rec.get('host')}"
    where = f"pid {rec.get('pid')} on {rec.get('host')}, " if rec.get("run_id") else ""
    return f"{who} ({where}since {rec.get('since')}, command: {rec.get('command') or '?'})"


@contextmanager
def hold(target, *, wait: bool = False, run_id: str | None = None, log=None):
    """Hold the lock on `target` (a file or folder path) for the `with` block; `OutputLocked` at once if another
    writer holds it, unless `wait`, which blocks until it is free. `run_id` (default $RIFT_RUN_ID) goes into the
    owner record; `log(line)` (default stderr) hears that a wait started."""
    from filelock import FileLock, Timeout

    target = Path(target).absolute()
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=True)  # the same object for the same path: nested holds are free
    if lock.is_locked:  # this thread holds it already (state is per thread)
        yield path
        return
    try:
        lock.acquire(blocking=False)
    except Timeout:
        if not wait:
            raise OutputLocked(target, path, holder(target)) from None
        (log or (lambda line: print(line, file=sys.stderr, flush=True)))(
            f"waiting for {holder(target)} to finish writing {target} (lock {path})")
        lock.acquire()
    try:
        _write_owner(target, run_id or os.environ.get(RUN_ID_ENV))
        yield path
    finally:
        owner_path(target).unlink(missing_ok=True)  # before letting go: the next holder writes its own
        lock.release()


def _write_owner(target: Path, run_id: str | None) -> None:
    record = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:300],
              "target": str(target)}
    dest = owner_path(target)
    tmp = tmp_beside(dest)
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, dest)
