"""Link faults in an isolated lab: silent drops in the bridge of the lab network's ``core`` namespace.

Each cut is one nftables table of family ``bridge`` in ``core`` with a ``forward`` chain that
drops IPv4/IPv6 frames between bridge ports (:mod:`orchestrator.network.namespaces` names
them). The drop is silent, like a lost link: no reset, no ICMP, a connect times out. ARP is
never dropped (a failed ARP answers "No route to host" at once: not silent), and nothing is
dropped on a namespace's own output (the sender would get EPERM). A heal deletes the table.

:func:`partition` cuts a data centre from all others (with or without the clients and the
root namespace's leg), :func:`cut_between` cuts two sets of ports both ways, :func:`one_way`
one direction only, :class:`FlakyLink` cuts and heals a link over and over. The drill faults
(:mod:`orchestrator.drills.partitions`) and the tests call them.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import threading
from collections.abc import Iterable

from orchestrator.errors import LabError
from orchestrator.network.namespaces import CLIENT_PORT, ROOT_PORT, LabNetwork

_TABLE_PREFIX = "drl_"
_counter = itertools.count(1)
_counter_lock = threading.Lock()


def _nft(network: LabNetwork, *args: str, script: str | None = None) -> str:
    argv = ["ip", "netns", "exec", network.core, "nft", *(["-f", "-"] if script is not None else args)]
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise LabError(f"nft {' '.join(args) or '-f -'} in {network.core} failed: {proc.stderr.strip()}; "
                       "is the nftables package installed (apt-get install nftables)?")
    return proc.stdout


def _set(ports: Iterable[str]) -> str:
    return "{ " + ", ".join(f'"{p}"' for p in sorted(set(ports))) + " }"


def _table_name(label: str) -> str:
    with _counter_lock:
        number = next(_counter)
    return f"{_TABLE_PREFIX}{re.sub(r'[^a-z0-9_]', '_', label.lower())}_{os.getpid()}_{number}"


def _install(network: LabNetwork, label: str, rules: list[str]) -> str:
    table = _table_name(label)
    body = "\n".join(f"    meta protocol {{ ip, ip6 }} {rule} counter drop" for rule in rules)
    _nft(network, script=(
        f"table bridge {table} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n"
        f"{body}\n  }}\n}}\n"))
    return table


def cut_between(network: LabNetwork, side_a: Iterable[str], side_b: Iterable[str], *, label: str = "cut") -> str:
    """Drop every IP frame between the bridge ports of ``side_a`` and ``side_b``, both ways; return the table.

    :raises LabError: a side is empty, or nft failed.
    """
    a, b = sorted(set(side_a)), sorted(set(side_b))
    if not a or not b:
        raise LabError(f"cut {label}: both sides need at least one bridge port (got {a} and {b})")
    return _install(network, label, [f"iifname {_set(a)} oifname {_set(b)}", f"iifname {_set(b)} oifname {_set(a)}"])


def one_way(network: LabNetwork, source: Iterable[str], target: Iterable[str], *, label: str = "oneway") -> str:
    """Drop IP frames from the ports ``source`` to the ports ``target`` only; return the table."""
    src, dst = sorted(set(source)), sorted(set(target))
    if not src or not dst:
        raise LabError(f"one-way cut {label}: both sides need at least one bridge port (got {src} and {dst})")
    return _install(network, label, [f"iifname {_set(src)} oifname {_set(dst)}"])


def _ports(numbers: Iterable[int]) -> str:
    return "{ " + ", ".join(str(n) for n in sorted(set(numbers))) + " }"


def cut_service(network: LabNetwork, servers: Iterable[str], clients: Iterable[str], tcp_ports: Iterable[int], *,
                label: str = "service") -> str:
    """Drop TCP between the bridge ports ``clients`` and the ``tcp_ports`` served behind ``servers``
    (both directions of those connections); everything else between them still flows. Return the table."""
    srv, cli, ports = sorted(set(servers)), sorted(set(clients)), list(tcp_ports)
    if not srv or not cli or not ports:
        raise LabError(f"cut {label}: needs server ports, client ports and TCP ports (got {srv}, {cli}, {ports})")
    return _install(network, label, [f"iifname {_set(cli)} oifname {_set(srv)} tcp dport {_ports(ports)}",
                                     f"iifname {_set(srv)} oifname {_set(cli)} tcp sport {_ports(ports)}"])


def isolate_server(network: LabNetwork, port: str, own_ports: Iterable[int], peer_ports: Iterable[int], *,
                   label: str = "server") -> str:
    """Cut the server behind bridge port ``port`` listening on ``own_ports`` from everything outside its
    namespace, and from its peers' ``peer_ports``; the namespace's other traffic still flows. Return the table."""
    own, peers = list(own_ports), list(peer_ports)
    if not own:
        raise LabError(f"cut {label}: the server needs at least one port")
    rules = [f'oifname "{port}" tcp dport {_ports(own)}', f'iifname "{port}" tcp sport {_ports(own)}']
    if peers:
        rules += [f'iifname "{port}" tcp dport {_ports(peers)}', f'oifname "{port}" tcp sport {_ports(peers)}']
    return _install(network, label, rules)


def partition(network: LabNetwork, datacenter: str, *, cut_clients: bool) -> str:
    """Cut ``datacenter`` (its hosts and its controller) from every other data centre, and from the
    clients and the root namespace's leg when ``cut_clients``; return the table to :func:`heal`."""
    inside = network.ports_of(datacenter)
    if not inside:
        raise LabError(f"{datacenter}: not a data centre of the lab network {network.prefix}; use one of "
                       f"{', '.join(network.datacenter_names)}")
    outside = [ns.port for ns in network.namespaces if ns.datacenter not in (datacenter, None)]
    if cut_clients:
        outside += [CLIENT_PORT, ROOT_PORT]
    return cut_between(network, inside, outside, label=f"partition_{datacenter}")


def heal(network: LabNetwork, table: str) -> None:
    """Delete one cut's table (a table already gone is healed)."""
    if table in tables(network):
        _nft(network, "delete", "table", "bridge", table)


def tables(network: LabNetwork) -> list[str]:
    """The names of every nftables table in ``core`` (of any family)."""
    out = _nft(network, "list", "tables")
    return [line.split()[-1] for line in out.splitlines() if line.startswith("table ")]


def dropped(network: LabNetwork, table: str) -> int:
    """How many frames a cut's table has dropped so far."""
    out = _nft(network, "list", "table", "bridge", table)
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def heal_all(network: LabNetwork) -> None:
    """Delete every nftables table in ``core``."""
    _nft(network, "flush", "ruleset")


class FlakyLink:
    """A link that is cut for ``down_s``, then up for ``up_s``, over and over, until :meth:`stop`.

    Runs in a thread of its own; :meth:`stop` heals the link before it returns. ``cycles``
    counts the cuts made.
    """

    def __init__(self, network: LabNetwork, side_a: Iterable[str], side_b: Iterable[str], *,
                 down_s: float, up_s: float) -> None:
        if down_s <= 0 or up_s <= 0:
            raise LabError(f"flaky link: down_s and up_s must be > 0 (got {down_s} and {up_s})")
        self.network, self.down_s, self.up_s = network, down_s, up_s
        self.side_a, self.side_b = tuple(side_a), tuple(side_b)
        self.cycles = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flaky-link", daemon=True)

    def start(self) -> FlakyLink:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                table = cut_between(self.network, self.side_a, self.side_b, label="flaky")
                self.cycles += 1
                try:
                    self._stop.wait(self.down_s)
                finally:
                    heal(self.network, table)
                self._stop.wait(self.up_s)
        except LabError as exc:
            self.error = exc

    def stop(self) -> None:
        """Stop flapping and leave the link healed.

        :raises LabError: a cut or a heal failed while flapping.
        """
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise LabError(f"flaky link: {self.error}")
