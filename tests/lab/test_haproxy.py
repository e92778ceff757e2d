"""The generated HAProxy configuration: what it checks, and that Debian's haproxy accepts it (``haproxy -c``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator import haproxy
from orchestrator.errors import LabError
from orchestrator.topology import Topology


def test_config_checks_primary_and_replica_on_the_health_ports(shipped_topology: Topology, tmp_path: Path) -> None:
    text = haproxy.render(shipped_topology, tmp_path)
    plan = shipped_topology.port_plan()
    rw, ro = text.split("listen payments-rw\n")[1].split("listen payments-ro\n")
    assert f"bind 127.0.0.1:{plan['haproxy:payments:rw']}" in rw and "option httpchk OPTIONS /primary" in rw
    assert f"bind 127.0.0.1:{plan['haproxy:payments:ro']}" in ro and "option httpchk OPTIONS /replica" in ro
    for section in (rw, ro):
        assert "http-check expect status 200" in section
        assert "default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions" in section
        for member in shipped_topology.cluster("payments").members:
            assert (f"server {member.name} 127.0.0.1:{plan[f'pg:payments:{member.name}']} check addr 127.0.0.1 "
                    f"port {plan[f'health:payments:{member.name}']}") in section
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    check = subprocess.run([haproxy.BINARY, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr


def test_no_health_section_is_one_line(shipped_topology: Topology, tmp_path: Path) -> None:
    bare = shipped_topology.model_copy(update={"health": None})
    with pytest.raises(LabError, match=r"^health: the topology has no health section; add 'health: \{\}'"):
        haproxy.render(bare, tmp_path)
