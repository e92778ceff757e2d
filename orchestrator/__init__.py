"""dr-orchestrator: disaster recovery and replication orchestration for PostgreSQL."""

__version__ = "0.1.0"
