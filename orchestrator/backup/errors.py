"""The backup branch of the exception tree (see :mod:`orchestrator.errors`)::

    InvalidInput
    └── BackupConfigError     a bad backup setting or file: the message names the field and the fix
    TemporaryError
    └── BackupFailed          the store or the engine failed (unreachable, refused, a command exited non-zero)
"""

from __future__ import annotations

from orchestrator.errors import InvalidInput, TemporaryError


class BackupConfigError(InvalidInput):
    """A backup setting, credentials file or CLI flag that cannot work; names the field and the fix."""


class BackupFailed(TemporaryError):
    """The object store or the backup engine failed; one line naming what and why."""
