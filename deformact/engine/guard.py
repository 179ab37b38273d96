"""A run's hold on its output folder: the folder is checked and locked before any work, and
SIGINT / SIGTERM stop the run with one line (docs/FAILURES.md).

The lock is ``OUT/.deformact.lock``: an ``flock`` held for the run's lifetime (the kernel drops it
when the process dies, however it dies) on a file that names the holder (pid, host, start time).
A second run into the same folder refuses at once; a lock file left by a killed run is taken over
with a note. Under torchrun rank 0 checks and locks, and every rank learns the outcome.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deformact.engine import dist
from deformact.engine.outputs import check_out_dir, describe_os_error, make_out_dir
from deformact.errors import ConfigError, DeformactError, TrainingError

try:
    import fcntl
except ImportError:  # not POSIX: the pid in the file is all there is
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".deformact.lock"


class StopSignal(BaseException):
    """Raised in the main thread by SIGINT / SIGTERM while a run is guarded.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way (e.g. around
    a checkpoint load) mistakes it for a failure of its own.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class RunInterrupted(TrainingError):
    """A run stopped by SIGINT / SIGTERM; the exit status is 128 + the signal number."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _holder(info: dict[str, Any]) -> str:
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}"


class RunLock:
    """``flock`` on ``folder/.deformact.lock`` plus the holder's pid, host and start time."""

    def __init__(self, folder: str | Path, command: str = "train") -> None:
        self.path = Path(folder) / LOCK_NAME
        self.command = command
        self.fd: int | None = None

    def _read(self, fd: int) -> dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        try:
            info = json.loads(raw.decode()) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError):
            info = {"pid": "?", "note": "unreadable lock file"}
        return info if isinstance(info, dict) else {}

    def _in_use(self, info: dict[str, Any]) -> TrainingError:
        return TrainingError(f"{self.path.parent} is in use by another run ({_holder(info)}); wait for it to "
                             "end or choose another --out")

    def acquire(self, note: Callable[[str], None] = print) -> RunLock:
        """Take the lock, or raise TrainingError naming the run that holds it."""
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise ConfigError(f"output folder {self.path.parent} is not writable: "
                                  f"{describe_os_error(e)}") from None
            flocked = False
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    flocked = True
                except OSError as e:
                    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        info = self._read(fd)
                        os.close(fd)
                        raise self._in_use(info) from None
                    # a filesystem without flock (ENOLCK, EOPNOTSUPP): the pid decides below
            try:  # a run that released the lock meanwhile unlinked the file we opened: start over
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = self._read(fd)
            if old and not flocked:
                here = old.get("host") == socket.gethostname()
                pid = old.get("pid")
                if not here or not isinstance(pid, int) or (pid != os.getpid() and _alive(pid)):
                    os.close(fd)
                    raise TrainingError(f"{self.path.parent} is in use by another run ({_holder(old)}); if that "
                                        f"run is gone, delete {self.path}")
            if old:  # a lock file is removed at exit, so this one is left by a run that was killed
                note(f"note: taking over {self.path} left by a run that is no longer running ({_holder(old)})")
            mine = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                    "started": datetime.datetime.now().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(mine, allow_nan=False) + "\n").encode())
            os.fsync(fd)
            self.fd = fd
            return self
        raise TrainingError(f"could not lock {self.path}: other runs keep taking and releasing it")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`StopSignal` in the main thread inside the block.

    Writes are atomic (temp + rename), so stopping anywhere leaves every output whole. A DataLoader
    worker forked meanwhile inherits the handler and gets KeyboardInterrupt instead, on which torch's
    worker loop exits quietly. Off the main thread, nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:
            raise KeyboardInterrupt
        raise StopSignal(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def guarded_out_dir(out: str | Path, ctx: dist.DistContext, command: str,
                    echo: Callable[[str], None] = print) -> Iterator[Path]:
    """Check, create and lock ``out`` (rank 0; every rank raises the same error), and turn SIGINT /
    SIGTERM into :class:`StopSignal`, for the block."""
    out = Path(out)
    lock, error, created = None, None, False
    if ctx.is_main:
        try:
            check_out_dir(out)
            created = not out.exists()
            make_out_dir(out)
            lock = RunLock(out, command).acquire(echo)
        except DeformactError as e:
            error = e
    error = dist.broadcast_object(ctx, error)
    if error is not None:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise error
    try:
        with stop_on_signals():
            yield out
    finally:
        if lock is not None:
            lock.release()
            if created:  # nothing was written (e.g. the config failed): leave no empty folder behind
                with contextlib.suppress(OSError):
                    out.rmdir()
