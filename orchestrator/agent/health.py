"""The agent's health port: Patroni-style endpoints for HAProxy and load balancers, and ``/metrics``.

:class:`HealthServer` is a small threaded HTTP server (the standard library's: a health check
must cost the agent nothing, and HAProxy polls every member every half second) that the agent
runtime starts on its member's ``health:<cluster>:<member>`` port. For each request it takes a
fresh :class:`~orchestrator.decisions.health.MemberHealth` from the agent and serves what
:func:`~orchestrator.decisions.health.answer` says: 200 or 503 with a JSON body (role, state,
timeline, lag), to GET, HEAD and OPTIONS (HAProxy's ``option httpchk`` sends OPTIONS unless
told otherwise). A bad ``?lag=`` or ``?replication_state=`` gets 400 naming the parameter.

``/metrics`` serves the agent's own registry (:func:`agent_registry`, never the global one):
role, timeline, replication lag in bytes and seconds, probe latency, seconds since the last
confirmed ZooKeeper write, fencing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.decisions import health as h
from orchestrator.errors import InvalidInput
from orchestrator.state import Role


@dataclass(frozen=True)
class AgentReading:
    """What the agent knows now: the health facts plus what only the metrics need."""

    cluster: str
    health: h.MemberHealth
    lag_seconds: float | None
    probe_seconds: float | None
    since_zookeeper_s: float | None   # since the send of the last confirmed lease write
    fences: int                       # self-fences since the agent started


def body(reading: AgentReading, endpoint: h.Endpoint | None, result: h.Answer | None) -> dict[str, Any]:
    """The JSON body of every health answer."""
    m = reading.health
    doc: dict[str, Any] = {
        "cluster": reading.cluster, "member": m.member, "role": m.role.value, "state": h.state_name(m),
        "timeline": m.timeline, "lag_bytes": m.lag_bytes, "lag_seconds": reading.lag_seconds,
        "replication_state": ("streaming" if m.streaming else "not streaming") if m.role is Role.STANDBY else None,
        "sync": m.synchronous if m.role is Role.STANDBY else None, "fenced": m.fenced,
        "lease_valid": m.lease_valid, "primary": m.recorded_primary, "generation": m.generation,
    }
    if endpoint is not None and result is not None:
        doc.update(endpoint=endpoint.value, status=result.status, reason=result.reason)
    return doc


def query_of(raw: str) -> h.Query:
    """:raises InvalidInput: a bad ``lag`` or ``replication_state`` (one line naming it)."""
    params = parse_qs(raw, keep_blank_values=True)
    lag = params.get("lag")
    state = params.get("replication_state")
    return h.Query(max_lag_bytes=h.parse_lag(lag[-1]) if lag else None,
                   replication_state=h.parse_replication_state(state[-1]) if state else None)


class _Collector(Collector):
    def __init__(self, read: Callable[[], AgentReading]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        r = self._read()
        m, labels = r.health, [r.cluster, r.health.member]
        names = ["cluster", "member"]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=names)
            if value is not None:
                family.add_metric(labels, value)
            return family

        role = GaugeMetricFamily("drctl_member_role", "1 for the role the member runs as (primary, standby, "
                                 "unknown), 0 for the others", labels=[*names, "role"])
        for each in Role:
            role.add_metric([*labels, each.value], 1.0 if m.role is each else 0.0)
        yield role
        yield gauge("drctl_postgres_running", "1 when PostgreSQL runs and answers", float(m.postmaster_alive
                                                                                         and m.answering))
        yield gauge("drctl_member_primary", "1 when /primary answers 200 here",
                    float(h.answer(h.Endpoint.PRIMARY, m).ok))
        yield gauge("drctl_member_timeline", "The member's timeline", m.timeline)
        yield gauge("drctl_replication_lag_bytes", "WAL a standby lacks against the primary's last recorded "
                    "position (0 on the primary)", m.lag_bytes if m.role is Role.STANDBY else 0
                    if m.role is Role.PRIMARY else None)
        yield gauge("drctl_replication_lag_seconds", "Seconds since the last replayed transaction while WAL "
                    "waits to be replayed (0 when caught up)", r.lag_seconds)
        yield gauge("drctl_member_sync_standby", "1 for a standby counted in the primary's synchronous quorum",
                    float(m.synchronous and m.role is Role.STANDBY))
        yield gauge("drctl_probe_seconds", "Latency of the agent's last local probe of PostgreSQL",
                    r.probe_seconds)
        yield gauge("drctl_zookeeper_last_contact_seconds", "Seconds since the agent's last confirmed "
                    "ZooKeeper write (its lease)", r.since_zookeeper_s)
        yield gauge("drctl_lease_valid", "1 while the agent holds a confirmed lease", float(m.lease_valid))
        yield gauge("drctl_member_fenced", "1 while the member is fenced", float(m.fenced))
        fences = CounterMetricFamily("drctl_agent_fencing_events", "Self-fences by this agent since it started",
                                     labels=names)
        fences.add_metric(labels, float(r.fences))
        yield fences


def agent_registry(read: Callable[[], AgentReading]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(read))
    return registry


class HealthServer:
    """The health port; :meth:`start` binds (raises OSError when it cannot), :meth:`stop` ends it."""

    def __init__(self, host: str, port: int, read: Callable[[], AgentReading], *, metrics: bool = True) -> None:
        registry = agent_registry(read) if metrics else None

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _json(self, status: int, doc: dict[str, Any]) -> None:
                self._send(status, json.dumps(doc).encode() + b"\n", "application/json")

            def _answer(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/metrics" and registry is not None:
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                    return
                endpoint = h.parse_endpoint(url.path)
                if endpoint is None:
                    known = ", ".join(f"/{e.value}" for e in h.Endpoint)
                    self._json(404, {"error": f"path: no endpoint {url.path}; use one of {known}"
                                              + (", /metrics" if registry is not None else "")})
                    return
                try:
                    query = query_of(url.query)
                except InvalidInput as exc:
                    self._json(400, {"error": str(exc)})
                    return
                reading = read()
                result = h.answer(endpoint, reading.health, query)
                self._json(result.status, body(reading, endpoint, result))

            do_GET = do_HEAD = do_OPTIONS = _answer

        self._server = ThreadingHTTPServer((host, port), Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.allow_reuse_address = True
        self.host, self.port = host, port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"health:{port}", daemon=True)

    def start(self) -> None:
        """:raises OSError: the port cannot be bound."""
        try:
            self._server.server_bind()
            self._server.server_activate()
        except OSError:
            self._server.server_close()
            raise
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
