"""User-facing error types: everything the CLI reports as one line with exit code 2."""

from __future__ import annotations

from curriculum.pool import PoolError
from teachloop.config import ConfigError


class UserError(Exception):
    """A mistake in what the user asked for (a path, an id, an option)."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, PoolError)
