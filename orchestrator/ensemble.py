"""The lab's ZooKeeper ensemble: one Debian ``zookeeper`` 3.8 server per data centre.

Debian's package ships no usable standalone launcher, so each server is a plain
``java ... QuorumPeerMain zoo.cfg`` with its own data dir, ``myid`` and pid file. Health
is read with the ``srvr`` four-letter word; the ensemble is ready when one server says
``leader`` and the others ``follower``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from orchestrator.network import namespaces
from orchestrator.processes import is_running, read_pid, spawn, stop
from orchestrator.topology import Topology

CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"


@dataclass(frozen=True)
class ZooKeeperServer:
    topology: Topology
    datacenter: str
    root: Path

    @property
    def myid(self) -> int:
        return self.topology.zookeeper_datacenters.index(self.datacenter) + 1

    @property
    def home(self) -> Path:
        return self.root / "zk" / self.datacenter

    @property
    def pidfile(self) -> Path:
        return self.home / "zk.pid"

    @property
    def address(self) -> str:
        return self.topology.datacenter(self.datacenter).address

    @property
    def client_port(self) -> int:
        return self.topology.port_plan()[f"zk:{self.datacenter}:client"]

    def config(self) -> str:
        zk, plan = self.topology.zookeeper, self.topology.port_plan()
        lines = [
            f"tickTime={zk.tick_time_ms}",
            f"initLimit={zk.init_limit}",
            # A follower cut from the leader stops serving (and closes its clients, who move to
            # another server with their sessions) after syncLimit x tickTime: 2 s at 4 x 500 ms.
            f"syncLimit={zk.sync_limit}",
            f"dataDir={self.home / 'data'}",
            f"clientPort={self.client_port}",
            f"clientPortAddress={self.address}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=srvr,ruok,mntr,stat,cons",
            # Sessions as short as the topology asks: the default ceiling is 20 ticks.
            f"maxSessionTimeout={max(zk.session_timeout_ms, 20 * zk.tick_time_ms)}",
        ]
        for dc in self.topology.zookeeper_datacenters:
            myid = self.topology.zookeeper_datacenters.index(dc) + 1
            address = self.topology.datacenter(dc).address
            lines.append(f"server.{myid}={address}:{plan[f'zk:{dc}:peer']}:{plan[f'zk:{dc}:election']}")
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """The server's command line (its timing for silent loss is in the config and here)."""
        return [
            "java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            # A healed server rejoins in ≈ 1 s instead of 44-115 s (measured on a cut link, with
            # tcp_rto_max_ms=1000 in its namespace): election notifications back off to 2 s, not 60 s.
            "-Dzookeeper.fastleader.maxNotificationInterval=2000",
            # An election connect to a silent peer gives up after 1 s instead of 5 s (the default;
            # not measured here: loopback refuses at once).
            "-Dzookeeper.cnxTimeout=1000",
            "-cp", CLASSPATH, "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(self.home / "zoo.cfg"),
        ]

    def pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid is not None and is_running(pid) else None

    def start(self) -> int:
        """Start the server unless it already runs; return its PID."""
        running = self.pid()
        if running is not None:
            return running
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        (self.home / "data" / "myid").write_text(f"{self.myid}\n")
        (self.home / "zoo.cfg").write_text(self.config())
        pid = spawn(self.command(), log=self.home / "zk.log", cwd=self.home,
                    netns=namespaces.netns_of(self.root, self.datacenter))
        self.pidfile.write_text(f"{pid}\n")
        return pid

    def stop(self) -> None:
        pid = read_pid(self.pidfile)
        if pid is not None:
            stop(pid)
        self.pidfile.unlink(missing_ok=True)

    def mode(self, timeout: float = 0.5) -> str | None:
        """``leader``, ``follower``, ``standalone``, or None when the server does not answer."""
        reply = four_letter(self.address, self.client_port, "srvr", timeout)
        for line in reply.splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None


def four_letter(address: str, port: int, word: str, timeout: float = 0.5) -> str:
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


def servers(topology: Topology, root: Path) -> list[ZooKeeperServer]:
    return [ZooKeeperServer(topology, dc, root) for dc in topology.zookeeper_datacenters]


def ensemble_ready(members: list[ZooKeeperServer]) -> bool:
    modes = [s.mode() for s in members]
    if len(members) == 1:
        return modes == ["standalone"]
    return modes.count("leader") == 1 and modes.count("follower") == len(members) - 1
