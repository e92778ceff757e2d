"""A fault hook until the network-namespace lab exists: TCP proxies that tests cut silently.

An agent (or a controller) started with ``--zk-hosts`` pointing at :class:`CutProxies` reaches
ZooKeeper only through them; :meth:`CutProxies.cut` then stops forwarding in both directions
without closing anything: no FIN, no RST, new connections accepted but never answered, exactly
what a silent partition looks like to both ends. PostgreSQL clients are untouched, so the member
keeps serving while its agent loses the lease. :meth:`CutProxies.heal` resumes forwarding; bytes
held meanwhile are delivered, like TCP retransmissions after a partition heals.

Used by ``tests/agent``; threads only, stopped by :meth:`CutProxies.close`.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class CutProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` while not cut."""

    def __init__(self, upstream: tuple[str, int], *, address: str = "127.0.0.1") -> None:
        self._upstream = upstream
        self._listener = socket.create_server((address, 0))
        self.address = address
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"cut-proxy-{self.port}", daemon=True).start()

    def cut(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def _track(self, sock: socket.socket) -> bool:
        """Remember ``sock`` to close it in :meth:`close`; False (and closed now) when that already ran:
        a connection finishing while the proxy closes must not outlive it, unclosed."""
        with self._lock:
            if not self._closed.is_set():
                self._sockets.append(sock)
                return True
        with contextlib.suppress(OSError):
            sock.close()
        return False

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._track(client):
                threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._wait_flowing()  # a connection made during a cut hangs, unanswered
        if self._closed.is_set():
            return
        try:
            upstream = socket.create_connection(self._upstream, timeout=2)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        upstream.settimeout(None)
        if not self._track(upstream):
            return
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _wait_flowing(self) -> None:
        while not self._flowing.wait(0.1):
            if self._closed.is_set():
                return

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            self._wait_flowing()  # hold what arrived during a cut, and any close too
            if self._closed.is_set():
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            sockets, self._sockets = self._sockets, []
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not, on Linux)
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


class CutProxies:
    """One :class:`CutProxy` per server of a ZooKeeper connection string; cut and heal together."""

    def __init__(self, hosts: str) -> None:
        self._proxies = []
        for entry in hosts.split(","):
            host, _, port = entry.rpartition(":")
            self._proxies.append(CutProxy((host, int(port))))

    @property
    def hosts(self) -> str:
        """The connection string to give the isolated process instead of the real one."""
        return ",".join(f"{p.address}:{p.port}" for p in self._proxies)

    def cut(self) -> None:
        for proxy in self._proxies:
            proxy.cut()

    def heal(self) -> None:
        for proxy in self._proxies:
            proxy.heal()

    def close(self) -> None:
        for proxy in self._proxies:
            proxy.close()
