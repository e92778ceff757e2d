"""Serve the REST API from a controller: uvicorn in a thread, on the controller's ``api:<dc>`` port.

The API shares the controller's ZooKeeper session; it never runs an action itself (actions
go through the request queue to the leader), so a slow or failing API cannot stall the
controller's rounds. A port that cannot be bound is logged by the controller, which carries on.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from orchestrator.api.app import ApiContext, create_app
from orchestrator.api.auth import AllowList, FailedLogins, TokenFile
from orchestrator.audit import AuditLog
from orchestrator.coordination import Coordinator
from orchestrator.errors import OrchestratorError
from orchestrator.metrics import ControllerMetrics
from orchestrator.topology import ApiSpec, Topology
from orchestrator.waiting import poll


def resolve(root: Path, path: str) -> Path:
    """A topology path: absolute as given, relative to the lab directory otherwise."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def audit_dir(root: Path) -> Path:
    return root / "audit"


def spec_of(topology: Topology) -> ApiSpec:
    if topology.api is None:
        raise OrchestratorError("api: the topology has no api section; add 'api: {}' to serve the REST API")
    return topology.api


def tokens_file(topology: Topology, root: Path) -> TokenFile:
    return TokenFile(resolve(root, spec_of(topology).tokens_file))


def api_url(topology: Topology, datacenter: str) -> str:
    spec = spec_of(topology)
    address = topology.datacenter(datacenter).address
    host = f"[{address}]" if ":" in address else address
    return f"{'https' if spec.tls else 'http'}://{host}:{topology.port_plan()[f'api:{datacenter}']}"


def ensure_certificate(topology: Topology, root: Path) -> None:
    """The lab's self-signed certificate for every controller address, when TLS is on and none is there."""
    spec = spec_of(topology)
    cert, key_path = resolve(root, spec.cert_file), resolve(root, spec.key_file)
    if not spec.tls or (cert.exists() and key_path.exists()):
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    addresses = sorted({topology.datacenter(dc).address for dc in topology.controller_datacenters})
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"drctl api {topology.name}")])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    names.append(x509.DNSName("localhost"))
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class ApiServer:
    """uvicorn in a daemon thread; :meth:`stop` ends it and waits."""

    def __init__(self, app: Any, host: str, port: int, *, certfile: Path | None = None,
                 keyfile: Path | None = None) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                                ssl_certfile=str(certfile) if certfile else None,
                                ssl_keyfile=str(keyfile) if keyfile else None, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"api:{port}", daemon=True)
        self.host, self.port = host, port

    def start(self, timeout: float = 15.0) -> None:
        """:raises OrchestratorError: the server did not start (port taken, bad certificate)."""
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # its failure is our one line
        self._thread.start()
        poll(lambda: self._server.started or not self._thread.is_alive(), timeout=timeout, interval=0.02)
        if not self._server.started:
            self.stop()
            raise OrchestratorError(f"api: could not serve on {self.host}:{self.port} (port in use, or a bad "
                                    "certificate); free the port or fix api.cert_file/api.key_file")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def serve(topology: Topology, datacenter: str, root: Path, coord: Coordinator, *, served_by: str,
          emit: Callable[..., None], drills_dir: Path | None, audit: AuditLog | None = None,
          metrics: ControllerMetrics | None = None) -> ApiServer:
    """Start the API of the controller in ``datacenter`` (its address and ``api:<dc>`` port)."""
    spec = spec_of(topology)
    ensure_certificate(topology, root)
    ctx = ApiContext(topology=topology, root=root, coord=coord, served_by=served_by,
                     audit=audit or AuditLog(audit_dir(root)), tokens=tokens_file(topology, root),
                     allow=AllowList(spec.allow), limiter=FailedLogins(spec.failed_logins, spec.failed_login_window_s),
                     drills_dir=drills_dir, emit=emit, request_timeout=spec.request_timeout_s,
                     metrics=metrics, metrics_token=spec.metrics_token)
    server = ApiServer(create_app(ctx), topology.datacenter(datacenter).address,
                       topology.port_plan()[f"api:{datacenter}"],
                       certfile=resolve(root, spec.cert_file) if spec.tls else None,
                       keyfile=resolve(root, spec.key_file) if spec.tls else None)
    server.start()
    return server
