"""Stalls on the session lab: a frozen server is a silent one to its peers (its kernel still
answers TCP), and detection must neither hang on it nor fail over for a stall it can ride out."""

from __future__ import annotations

import os
import signal

import pytest

from orchestrator import postgres as pg
from orchestrator.lab import Lab
from orchestrator.pgserver import member_endpoint
from orchestrator.state import Health

pytestmark = pytest.mark.lab


def test_a_probe_of_a_stalled_server_fails_at_its_deadline_instead_of_hanging(lab: Lab) -> None:
    cluster = lab.topology.cluster("payments")
    member = cluster.members[-1]
    endpoint = member_endpoint(lab.topology, cluster, member)
    prober = pg.Prober(lab.credentials, timeout=0.5)
    try:
        assert prober.probe(endpoint).health is Health.HEALTHY
        conn = prober.connection(endpoint)
        assert conn is not None
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = int(str(row[0]))
        os.kill(backend, signal.SIGSTOP)   # the probe's own backend: the rest of the lab runs on
        try:
            status = prober.probe(endpoint)
        finally:
            os.kill(backend, signal.SIGCONT)
        assert status.health is Health.UNREACHABLE and not status.refused, status
        assert "no answer within the 0.5 s probe timeout" in (status.error or "")
        # The cut connection was dropped: the next probe logs in again and answers.
        assert prober.probe(endpoint).health is Health.HEALTHY
    finally:
        prober.close()
