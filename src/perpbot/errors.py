"""User-facing errors.

Every problem a user can cause (bad configuration, a bad file, a bad flag) is raised as a
``PerpbotError`` whose message is one line naming the culprit; the CLI prints it and exits
with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PerpbotError(Exception):
    """A problem with the user's input, reported as one line, exit status 2."""

    exit_code = 2


class ConfigError(PerpbotError):
    """An environment variable or setting has a bad value."""


class DataError(PerpbotError):
    """A market-data file is missing, unreadable or violates the schema."""


class ModelError(PerpbotError):
    """A model file is missing, corrupt, or built for a different feature schema."""


class InsufficientDataError(PerpbotError):
    """Too few samples to train or evaluate honestly."""
