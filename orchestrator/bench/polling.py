"""Kept-open PostgreSQL connections for the peers' observation loops (every ~50 ms).

The Patroni and pg_auto_failover launchers poll each member's role and
``synchronous_standby_names`` through one :class:`KeptConnections`: a connection is opened
on first use, reused while it works, and dropped on any error (a killed server) so that
the next poll reconnects. A failed query is ``None``, never an exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import psycopg

Row = tuple[Any, ...]
Connect = Callable[[], "psycopg.Connection[Row]"]


class KeptConnections:
    """One autocommit connection per key (a member name, a port), made by that key's ``connect``."""

    def __init__(self, connectors: dict[str, Connect] | None = None) -> None:
        self._connectors: dict[str, Connect] = dict(connectors or {})
        self._conns: dict[str, psycopg.Connection[Row]] = {}

    def add(self, key: str, connect: Connect) -> None:
        self._connectors.setdefault(key, connect)

    def query(self, key: str, statement: str) -> list[Row] | None:
        """The rows of ``statement`` on ``key``'s server, or None when it does not answer."""
        try:
            conn = self._conns.get(key)
            if conn is None or conn.closed:
                conn = self._connectors[key]()
                self._conns[key] = conn
            return conn.execute(statement).fetchall()
        except psycopg.Error:
            self.drop(key)
            return None

    def drop(self, key: str) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        for key in list(self._conns):
            self.drop(key)


def connector(conninfo: str = "", *, statement_timeout_ms: int = 500, **kwargs: Any) -> Connect:
    """A ``connect`` for :class:`KeptConnections`: autocommit, statements cut at ``statement_timeout_ms``."""

    def connect() -> psycopg.Connection[Row]:
        return psycopg.connect(conninfo, autocommit=True, options=f"-c statement_timeout={statement_timeout_ms}",
                               **kwargs)

    return connect
