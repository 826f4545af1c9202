"""User-facing error types: everything the CLI reports as one line with exit code 2."""

from __future__ import annotations

import sys

from teachloop.curriculum.pool import PoolError
from teachloop.config import ConfigError


class UserError(Exception):
    """A mistake in what the user asked for (a path, an id, an option)."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, PoolError)

# Error types of heavier modules, looked up only if the command imported them, so that
# `teachloop --help` does not pay for importing the backends.
_LAZY = {"teachloop.agents.backends": ("BackendUnavailable", "EndpointsDown"),
         "teachloop.evals.sandbox": ("IsolationUnavailable",),
         "teachloop.evals.bench": ("BenchError",)}


def user_error_types() -> tuple[type[BaseException], ...]:
    extra = []
    for mod, names in _LAZY.items():
        m = sys.modules.get(mod)
        if m is not None:
            extra += [getattr(m, n) for n in names if hasattr(m, n)]
    return USER_ERRORS + tuple(extra)
