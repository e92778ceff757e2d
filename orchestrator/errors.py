"""The exception tree of dr-orchestrator.

Adapters translate library errors (psycopg, kazoo, ansible-runner, boto3) into
these classes at the boundary, so callers never catch a third-party exception::

    OrchestratorError
    ├── InvalidInput              bad topology, drill file, CLI flag or request (permanent)
    │   ├── TopologyError
    │   └── DrillFileError
    ├── PermanentError            retrying will not help (e.g. no eligible candidate)
    │   ├── NoCandidate
    │   ├── LostLeadership        a stale leader tried to write: its epoch is gone
    │   └── DrillLocked           another drill holds the drill lock
    └── TemporaryError            worth retrying (callers choose the policy)
        ├── DatabaseUnavailable
        ├── CoordinationUnavailable
        ├── PlaybookFailed
        └── LabError              a lab process did not start or stop in time
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error dr-orchestrator raises on purpose."""


class InvalidInput(OrchestratorError):
    """Input that contradicts itself or the topology; the message names the field and the fix."""


class TopologyError(InvalidInput):
    """A topology file that does not describe a consistent deployment."""


class DrillFileError(InvalidInput):
    """A drill file that is malformed or names something the topology lacks."""


class PermanentError(OrchestratorError):
    """A failure that retrying will not fix."""


class NoCandidate(PermanentError):
    """No member is eligible for promotion under the cluster's policy."""


class LostLeadership(PermanentError):
    """This controller is no longer the leader: its epoch was superseded."""


class DrillLocked(PermanentError):
    """Another drill is running; only one drill runs at a time."""


class TemporaryError(OrchestratorError):
    """A failure worth retrying; how often and for how long is the caller's policy."""


class DatabaseUnavailable(TemporaryError):
    """A PostgreSQL member could not be reached or did not answer in time."""


class CoordinationUnavailable(TemporaryError):
    """The ZooKeeper ensemble could not be reached."""


class PlaybookFailed(TemporaryError):
    """An Ansible playbook run ended with a failure."""


class LabError(TemporaryError):
    """A lab process did not start, become ready, or stop in time."""
