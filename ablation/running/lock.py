"""One driver per results directory: an exclusive lock file holding its holder's host and pid.

`ablation grid` takes `<out>/.lock` with `flock` before it cleans temporaries, quarantines damaged
records or starts a job, and holds it until it exits; the kernel lets go of it when the driver dies,
however it dies. A second driver finds it taken, says who holds it and stops. On a shared filesystem
the lock is only as good as the filesystem's locking (NFS, Lustre; Slurm jobs of a killed driver):
see docs/reproducibility.md.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from ablation.core.errors import LockError

LOCK_NAME = ".lock"


class LockedError(LockError):
    """Another driver holds the results directory."""


class ResultsLock:
    """``with ResultsLock(out):`` holds ``out``'s lock for the block; raises `LockedError` if taken."""

    def __init__(self, out: str | os.PathLike):
        self.path = Path(out) / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> ResultsLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a driver that has not written its name"
            os.close(fd)
            raise LockedError(f"{self.path.parent} is in use by another `ablation grid` ({holder}); "
                              "wait for it to end or stop it, then run again") from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a filesystem without locks
            print(f"ablation: warning: cannot lock {self.path} ({e.strerror}); make sure no other grid "
                  "writes into this directory", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty file: nobody holds it
            os.close(self.fd)  # closing releases the lock
            self.fd = None
