"""The one error type a user meets: `AblationError`, said by `ablation` in one line with exit 2.

Each kind also derives from the built-in exception it refines (a bad value is a ValueError, a
missing file an OSError), so library callers may catch either. Anything else that escapes
`cli.main` is a bug, and keeps its traceback.
"""

from __future__ import annotations


class AblationError(Exception):
    """A user error: bad config or input, missing data, a held lock, a missing extra or device."""


class ConfigError(AblationError, ValueError):
    """A config key, value, experiment file or command-line option that cannot run."""


class DataError(AblationError, ValueError):
    """Data that is not what it should be: a malformed file, a checksum, an empty split."""


class LockError(AblationError, RuntimeError):
    """Another process holds what this one needs (a results directory)."""


class DeviceError(AblationError, RuntimeError):
    """A device asked for that this machine does not have."""


class MissingExtra(AblationError, ImportError):
    """An optional extra (``pip install -e '.[NAME]'``) that a command needs is not installed."""

    def __init__(self, extra: str, what: str):
        super().__init__(f"{what} needs the `{extra}` extra: pip install -e '.[{extra}]'")
        self.extra = extra


def need(module: str, extra: str, what: str):
    """``import module``, or a `MissingExtra` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(extra, what) from None
