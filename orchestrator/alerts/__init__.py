"""Alerts: events that need a human (failover, fencing, a failed drill, DR lag, ...) to receivers.

``config`` (the topology's ``alerts:`` section), ``model`` (alert kinds and the pure mapping
from events), ``policy`` (pure de-duplication and retry back-off), ``delivery`` (webhook,
chat webhook and SMTP adapters) and ``dispatcher`` (the background thread that routes,
de-duplicates, delivers and records failures).
"""
