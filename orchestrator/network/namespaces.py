"""A lab network of Linux network namespaces: one per data centre, one for clients, joined by a bridge.

:func:`plan` derives every name and address from the topology (namespaces ``drl<base>-...``,
addresses in ``198.18.X.0/24`` or ``198.19.X.0/24`` with ``X`` from ``ports.base``), so labs on
different port ranges never share a name or an address. Each data centre has two namespaces:
one for its hosts (PostgreSQL members, their agents, its ZooKeeper server) and one for its
controller, a host of its own, so a link fault can cut the controllers off a primary while its
standbys still reach it. :func:`create` first records the plan in
``network.json`` in the lab directory, then builds it: a ``core`` namespace holding the bridge
``br0``; per data centre (and for clients) a namespace with ``lo`` up and a veth pair whose
``eth0`` end carries the data centre's host addresses and whose other end is a bridge port in
``core``; and a leg from the root namespace into the bridge, so a test runner or ``drctl`` on
this machine reaches the lab. Nothing routes out: no default route, only the lab's own subnet.

:func:`destroy` reads ``network.json`` and removes whatever of it exists: it stops every PID that
``ip netns pids`` lists (by PID), deletes the nftables tables in ``core``, the namespaces and the
root leg. It is idempotent and works after a crash (the state file is written before anything
is built). :func:`isolate` turns a topology into the one the isolated lab runs: host addresses
replaced by the namespaces' addresses. The lab (:mod:`orchestrator.lab`) and
:mod:`orchestrator.network.nftables` are the callers.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import LabError
from orchestrator.processes import stop_all
from orchestrator.topology import Topology

STATE_FILE = "network.json"
BRIDGE = "br0"
# The bridge port of the root leg and of the client namespace, inside core.
ROOT_PORT = "pr"
CLIENT_PORT = "pc"
_PREFIX_LEN = 24


@dataclass(frozen=True)
class Namespace:
    """One lab namespace: its name, the data centre it belongs to (None: clients), its kind
    (``dc``: the data centre's hosts, ``ctl``: its controller, ``client``), its bridge port in
    ``core`` and the addresses on its ``eth0``."""

    name: str
    datacenter: str | None
    kind: str
    port: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class LabNetwork:
    """Every name and address of one lab network (what ``network.json`` records)."""

    prefix: str
    subnet: str
    core: str
    root_link: str
    root_address: str
    namespaces: tuple[Namespace, ...]
    # Host name -> address, for the derived topology.
    host_addresses: dict[str, str]

    def namespace_of(self, datacenter: str, kind: str = "dc") -> Namespace:
        for ns in self.namespaces:
            if ns.datacenter == datacenter and ns.kind == kind:
                return ns
        raise LabError(f"{datacenter}: no {kind} namespace for this data centre in the lab network {self.prefix}")

    def ports_of(self, datacenter: str) -> tuple[str, ...]:
        """The bridge ports of everything in ``datacenter`` (its hosts and its controller)."""
        return tuple(ns.port for ns in self.namespaces if ns.datacenter == datacenter)

    @property
    def client(self) -> Namespace:
        return next(ns for ns in self.namespaces if ns.kind == "client")

    @property
    def datacenter_names(self) -> tuple[str, ...]:
        return tuple(ns.datacenter for ns in self.namespaces if ns.kind == "dc" and ns.datacenter is not None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabNetwork:
        namespaces = tuple(Namespace(n["name"], n["datacenter"], n["kind"], n["port"], tuple(n["addresses"]))
                           for n in data["namespaces"])
        return cls(data["prefix"], data["subnet"], data["core"], data["root_link"], data["root_address"],
                   namespaces, dict(data["host_addresses"]))


def subnet_for(base: int) -> ipaddress.IPv4Network:
    """``198.18.X.0/24`` (or ``198.19.X``) with X from the port base: one /24 per 100 ports."""
    index = (base // 100) % 512
    return ipaddress.IPv4Network(f"198.{18 + index // 256}.{index % 256}.0/{_PREFIX_LEN}")


def plan(topology: Topology) -> LabNetwork:
    """Names and addresses for ``topology``'s lab network (pure: no I/O)."""
    base = topology.ports.base
    prefix = f"drl{base}"
    subnet = subnet_for(base)
    hosts = list(subnet.hosts())   # .1 .. .254
    namespaces: list[Namespace] = []
    host_addresses: dict[str, str] = {}
    next_host = 10   # .11 on: data centre hosts in topology order
    for index, dc in enumerate(topology.datacenters, start=1):
        addresses = []
        for host in dc.hosts:
            if next_host >= 200:
                raise LabError(f"topology {topology.name}: more than 190 hosts do not fit the isolated lab's /24")
            address = str(hosts[next_host])
            next_host += 1
            host_addresses[host.name] = address
            addresses.append(address)
        namespaces.append(Namespace(f"{prefix}-dc-{dc.name}", dc.name, "dc", f"p{index}", tuple(addresses)))
        if dc.name in topology.controller_datacenters:   # .201 on: the controllers' own hosts
            namespaces.append(Namespace(f"{prefix}-ctl-{dc.name}", dc.name, "ctl", f"c{index}",
                                        (str(hosts[199 + index]),)))
    namespaces.append(Namespace(f"{prefix}-client", None, "client", CLIENT_PORT, (str(hosts[249]),)))   # .250
    return LabNetwork(prefix, str(subnet), f"{prefix}-core", f"{prefix}r", str(hosts[0]), tuple(namespaces),
                      host_addresses)


def isolate(topology: Topology, network: LabNetwork) -> Topology:
    """``topology`` with every host address replaced by its namespace address.

    Without the REST API: a controller runs in a namespace of its own, where its data centre's
    address (the API's) does not exist.
    """
    data = topology.model_dump(mode="json")
    for region in data["regions"]:
        for dc in region["datacenters"]:
            for host in dc["hosts"]:
                host["address"] = network.host_addresses[host["name"]]
    data["api"] = None
    return Topology.model_validate(data)


# ---- state file ------------------------------------------------------------------------------


def load(root: Path) -> LabNetwork | None:
    """The lab network recorded in ``root``, or None (a loopback lab, or none at all)."""
    path = root / STATE_FILE
    try:
        return LabNetwork.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(f"{path}: unreadable network state ({type(exc).__name__}); delete the namespaces listed "
                       "by 'ip netns list' by hand, then the file") from None


def netns_of(root: Path, datacenter: str, kind: str = "dc") -> str | None:
    """The namespace a process of ``datacenter`` runs in for the lab at ``root`` (None: loopback lab);
    ``kind`` ``ctl`` for its controller."""
    network = load(root)
    return None if network is None else network.namespace_of(datacenter, kind).name


def exec_prefix(netns: str | None, user: str | None = None) -> list[str]:
    """The argv prefix that runs a command in ``netns`` (as ``user``, when given): empty for no namespace.

    ``ip netns exec`` comes first (it needs root); ``setpriv`` then drops to ``user`` without
    forking, so the PID of the command is the PID of the server it execs.
    """
    if netns is None:
        return []
    prefix = ["ip", "netns", "exec", netns]
    if user is not None:
        prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--"]
    return prefix


def host_exec_prefixes(topology: Topology, network: LabNetwork) -> dict[str, list[str]]:
    """Per topology host, the prefix that runs a server command in its namespace as the OS user
    (the playbooks' ``dr_exec_prefix``: :func:`orchestrator.playbooks.inventory`)."""
    user = topology.postgres.os_user
    return {host.name: exec_prefix(network.namespace_of(dc.name).name, user)
            for dc in topology.datacenters for host in dc.hosts}


# ---- building and tearing down -----------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def run_in(netns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30
           ) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``netns`` and wait for it.

    :raises LabError: it exited non-zero and ``check`` is set.
    """
    proc = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=False,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} in {netns} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def existing_namespaces() -> set[str]:
    out = _ip("netns", "list").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def create(network: LabNetwork, root: Path) -> None:
    """Record ``network`` in ``root/network.json``, then build it (idempotent: what exists is kept).

    :raises LabError: a namespace of the plan exists but this lab did not record it (another lab
        directory's, on the same ports: nothing is built), or a command failed (what was built
        stays recorded: :func:`destroy` removes it).
    """
    present = existing_namespaces()
    ours = load(root)
    foreign = sorted(({ns.name for ns in network.namespaces} | {network.core}) & present) if ours is None else []
    if foreign:
        raise LabError(f"network namespace {foreign[0]} already exists but {root / STATE_FILE} does not record it: "
                       f"another lab on ports from {network.prefix.removeprefix('drl')} runs; take it down with "
                       "'drctl lab down --lab-dir ITS_DIR' (or 'ip netns del' what is left), or move ports.base")
    root.mkdir(parents=True, exist_ok=True)
    (root / STATE_FILE).write_text(json.dumps(network.to_json(), indent=2))
    core = network.core
    if core not in present:
        _ip("netns", "add", core)
        _ip("-n", core, "link", "set", "lo", "up")
        _ip("-n", core, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", core, "link", "set", BRIDGE, "up")
    prefix_len = ipaddress.IPv4Network(network.subnet).prefixlen
    for ns in network.namespaces:
        if ns.name in present:
            continue
        _ip("netns", "add", ns.name)
        _ip("-n", ns.name, "link", "set", "lo", "up")
        _ip("-n", core, "link", "add", ns.port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        _ip("-n", core, "link", "set", ns.port, "master", BRIDGE, "up")
        for address in ns.addresses:
            _ip("-n", ns.name, "addr", "add", f"{address}/{prefix_len}", "dev", "eth0")
        _ip("-n", ns.name, "link", "set", "eth0", "up")
    if not link_exists(network.root_link):
        _ip("link", "add", network.root_link, "type", "veth", "peer", "name", ROOT_PORT, "netns", core)
        _ip("-n", core, "link", "set", ROOT_PORT, "master", BRIDGE, "up")
        _ip("addr", "add", f"{network.root_address}/{prefix_len}", "dev", network.root_link)
        _ip("link", "set", network.root_link, "up")


def namespace_pids(netns: str) -> list[int]:
    """The PIDs of every process inside ``netns`` (none when it does not exist)."""
    proc = _ip("netns", "pids", netns, check=False)
    return [int(word) for word in proc.stdout.split() if word.isdigit()] if proc.returncode == 0 else []


def destroy(root: Path) -> None:
    """Remove the lab network recorded in ``root`` and everything still running in it (idempotent).

    Every PID inside its namespaces is stopped first (``ip netns del`` with live processes only
    removes the name: the namespace and its veth live on until the last process exits).

    :raises LabError: a process survived SIGKILL, or a namespace could not be deleted.
    """
    network = load(root)
    if network is None:
        return
    present = existing_namespaces()
    names = [ns.name for ns in network.namespaces] + [network.core]
    pids = sorted({pid for name in names if name in present for pid in namespace_pids(name)})
    if pids:
        stop_all(pids, timeout=5)
    if network.core in present:
        from orchestrator.network import nftables

        nftables.heal_all(network)
    for name in names:
        if name in present:
            _ip("netns", "del", name)
    if link_exists(network.root_link):   # normally gone with its peer in core
        _ip("link", "del", network.root_link)
    (root / STATE_FILE).unlink(missing_ok=True)


def set_sysctl(netns: str, key: str, value: str) -> bool:
    """Set a per-namespace sysctl when this kernel has it; False when it does not."""
    if not Path("/proc/sys", *key.split(".")).exists():
        return False
    run_in(netns, ["sysctl", "-q", "-w", f"{key}={value}"])
    return True
