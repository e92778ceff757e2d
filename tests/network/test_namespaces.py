"""Real network namespaces: a lab network carries TCP between data centres, a partition drops it
silently (a connect times out, nothing refuses), a heal restores it, a one-way cut drops one
direction only, and teardown leaves nothing behind, also after a crash."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import LabError
from orchestrator.network import namespaces as ns
from orchestrator.network import nftables as nft
from orchestrator.network.namespaces import LabNetwork
from orchestrator.processes import is_running, spawn
from orchestrator.topology import Topology, with_port_base
from orchestrator.waiting import poll
from tests.conftest import TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

PEER = str(Path(__file__).with_name("peer.py"))
NETWORK_BASE = TEST_PORT_BASE + 7100   # names drl<base>-..., addresses 198.18.X.0/24 of this base
PEER_PORT = 5432


def _leftovers(network: LabNetwork) -> list[str]:
    names = {n.name for n in network.namespaces} | {network.core}
    found = sorted(names & ns.existing_namespaces())
    if ns.link_exists(network.root_link):
        found.append(network.root_link)
    return found


@pytest.fixture(scope="module")
def network(shipped_topology: Topology) -> Iterator[tuple[LabNetwork, Path]]:
    root = make_lab_dir("drctl-netns-")
    net = ns.plan(with_port_base(shipped_topology, NETWORK_BASE))
    try:
        ns.create(net, root)
        yield net, root
    finally:
        ns.destroy(root)
        shutil.rmtree(root)
    assert _leftovers(net) == []


def _address(net: LabNetwork, dc: str) -> str:
    return net.namespace_of(dc).addresses[0]


def _listen(net: LabNetwork, root: Path, dc: str) -> Path:
    """A TCP and UDP peer on ``dc``'s address; return its UDP log. It stops with the network."""
    log = root / f"peer-{dc}.log"
    log.touch()
    spawn([sys.executable, PEER, "listen", _address(net, dc), str(PEER_PORT), str(log)],
          log=root / f"peer-{dc}.out", cwd=root, netns=net.namespace_of(dc).name)
    return log


def _connect(net: LabNetwork, source: str, target: str, timeout: float = 1.0) -> str:
    proc = ns.run_in(net.namespace_of(source).name,
                     [sys.executable, PEER, "connect", _address(net, target), str(PEER_PORT), str(timeout)])
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def peers(network: tuple[LabNetwork, Path]) -> dict[str, Path]:
    net, root = network
    logs = {dc: _listen(net, root, dc) for dc in ("dc1", "dc2")}
    # Listening: a connect from the other data centre is accepted (polled: the peer starts).
    assert poll(lambda: _connect(net, "dc1", "dc2") == "ok" and _connect(net, "dc2", "dc1") == "ok",
                timeout=10, interval=0.1)
    return logs


def test_partition_drops_silently_and_heal_restores(network: tuple[LabNetwork, Path], peers: dict[str, Path]
                                                    ) -> None:
    net, _ = network
    table = nft.partition(net, "dc1", cut_clients=False)
    try:
        # Silent: the connect times out; nothing answers with a reset or an ICMP error.
        assert _connect(net, "dc2", "dc1") == "timeout"
        assert _connect(net, "dc1", "dc2") == "timeout"
        assert nft.dropped(net, table) > 0
        # Clients kept: the client namespace still reaches the cut data centre.
        proc = ns.run_in(net.client.name, [sys.executable, PEER, "connect", _address(net, "dc1"),
                                           str(PEER_PORT), "1"])
        assert proc.stdout.strip() == "ok"
    finally:
        nft.heal(net, table)
    assert table not in nft.tables(net)
    assert _connect(net, "dc2", "dc1") == "ok"


def test_partition_with_clients_cuts_the_root_leg(network: tuple[LabNetwork, Path], peers: dict[str, Path]
                                                  ) -> None:
    net, _ = network
    table = nft.partition(net, "dc2", cut_clients=True)
    try:
        proc = ns.run_in(net.client.name, [sys.executable, PEER, "connect", _address(net, "dc2"),
                                           str(PEER_PORT), "1"])
        assert proc.stdout.strip() == "timeout"
    finally:
        nft.heal(net, table)
    assert _connect(net, "dc1", "dc2") == "ok"


def test_one_way_cut_drops_one_direction(network: tuple[LabNetwork, Path], peers: dict[str, Path]) -> None:
    net, _ = network
    table = nft.one_way(net, net.ports_of("dc1"), net.ports_of("dc2"))
    try:
        # dc1 -> dc2 is dropped: the SYN never arrives.
        assert _connect(net, "dc1", "dc2") == "timeout"
        dropped = nft.dropped(net, table)
        assert dropped > 0
        # dc2 -> dc1 still arrives (UDP: no answer has to travel back).
        ns.run_in(net.namespace_of("dc2").name,
                  [sys.executable, PEER, "send", _address(net, "dc1"), str(PEER_PORT), "from-dc2"])
        assert poll(lambda: "from-dc2" in peers["dc1"].read_text(), timeout=5, interval=0.05)
        ns.run_in(net.namespace_of("dc1").name,
                  [sys.executable, PEER, "send", _address(net, "dc2"), str(PEER_PORT), "from-dc1"])
        assert poll(lambda: nft.dropped(net, table) > dropped, timeout=5, interval=0.05)
        assert "from-dc1" not in peers["dc2"].read_text()
    finally:
        nft.heal(net, table)
    assert _connect(net, "dc1", "dc2") == "ok"


def test_flaky_link_cuts_repeatedly_and_ends_healed(network: tuple[LabNetwork, Path], peers: dict[str, Path]
                                                    ) -> None:
    net, _ = network
    flaky = nft.FlakyLink(net, net.ports_of("dc1"), net.ports_of("dc2"), down_s=0.05, up_s=0.05).start()
    try:
        assert poll(lambda: flaky.cycles >= 3, timeout=10, interval=0.02)
    finally:
        flaky.stop()
    assert [t for t in nft.tables(net) if t.startswith("drl_flaky")] == []
    assert _connect(net, "dc1", "dc2") == "ok"


def test_teardown_after_a_crash_leaves_nothing(shipped_topology: Topology) -> None:
    """A lab that 'crashed' with processes running and a cut in place: destroy() from the state file
    alone stops the processes by PID and removes every namespace, veth and table; twice is fine."""
    root = make_lab_dir("drctl-netns-crash-")
    net = ns.plan(with_port_base(shipped_topology, NETWORK_BASE + 100))
    ns.create(net, root)
    pid = spawn([sys.executable, PEER, "listen", _address(net, "dc3"), str(PEER_PORT), str(root / "udp.log")],
                log=root / "peer.out", cwd=root, netns=net.namespace_of("dc3").name)
    nft.partition(net, "dc3", cut_clients=True)
    assert poll(lambda: pid in ns.namespace_pids(net.namespace_of("dc3").name), timeout=5, interval=0.05)
    assert (root / ns.STATE_FILE).exists()
    # The crash: nothing of this process's knowledge survives but the lab directory.
    ns.destroy(root)
    assert not is_running(pid)
    assert _leftovers(net) == []
    assert not (root / ns.STATE_FILE).exists()
    ns.create(net, root)   # state file again, then destroy twice
    ns.destroy(root)
    ns.destroy(root)
    assert _leftovers(net) == []
    shutil.rmtree(root)


def test_a_second_lab_on_the_same_ports_is_refused_before_anything_is_built(shipped_topology: Topology) -> None:
    first, second = make_lab_dir("drctl-netns-first-"), make_lab_dir("drctl-netns-second-")
    net = ns.plan(with_port_base(shipped_topology, NETWORK_BASE + 100))
    try:
        ns.create(net, first)
        with pytest.raises(LabError, match=rf"network namespace drl{NETWORK_BASE + 100}-\S+ already exists"):
            ns.create(net, second)
        assert ns.load(second) is None   # nothing recorded, so its teardown cannot take the first lab's
        ns.destroy(second)
        assert {n.name for n in net.namespaces} <= ns.existing_namespaces()
    finally:
        ns.destroy(first)
        shutil.rmtree(first)
        shutil.rmtree(second)
    assert _leftovers(net) == []


def test_plan_gives_each_base_its_own_names_and_subnet(shipped_topology: Topology) -> None:
    a = ns.plan(with_port_base(shipped_topology, 1100))
    b = ns.plan(with_port_base(shipped_topology, 8600))
    assert a.subnet == "198.18.11.0/24" and b.subnet == "198.18.86.0/24"
    assert {n.name for n in a.namespaces}.isdisjoint({n.name for n in b.namespaces})
    isolated = ns.isolate(with_port_base(shipped_topology, 1100), a)
    assert isolated.datacenter("dc2").address == a.namespace_of("dc2").addresses[0]
    assert all(len(n.port) <= 15 for n in a.namespaces) and len(a.root_link) <= 15
