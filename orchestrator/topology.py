"""The declarative topology: regions, data centres, hosts, ZooKeeper, clusters, policy, targets.

Loaded from YAML (``topology/*.yaml``) by :func:`load_topology`; every other module takes a
:class:`Topology` and never re-reads the file. Models are frozen and reject unknown keys.
Cross-object contradictions (a member in an unknown data centre, a quorum larger than its
candidates, two servers on one address and port, ...) are caught here, with no I/O, and
reported as one line naming the field path and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.alerts.config import AlertsSpec
from orchestrator.errors import InvalidInput, TopologyError
from orchestrator.yamlfile import read_yaml as read_yaml  # drills.spec reads its files here too

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,40}$"
_NAME_RE = re.compile(NAME_PATTERN)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lower-case letters, digits and '-', starting with a letter"
        )
    return value


class Host(_Model):
    name: str
    address: str = "127.0.0.1"

    _name = field_validator("name")(_check_name)

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address: give the host's IPv4 or IPv6 address") from None
        return value


class DataCenter(_Model):
    name: str
    hosts: tuple[Host, ...] = ()
    # A witness site hosts only a ZooKeeper server (no member, no controller): the third vote
    # that lets the ensemble keep a majority when a whole region is lost (see :func:`warnings`).
    witness: bool = False

    _name = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _default_host(self) -> DataCenter:
        if not self.hosts:
            # One loopback host named after the data centre: the lab's default.
            object.__setattr__(self, "hosts", (Host(name=self.name),))
        return self

    @property
    def address(self) -> str:
        """The data centre's first host address: where its ZooKeeper server and controller bind."""
        return self.hosts[0].address


class Region(_Model):
    name: str
    datacenters: tuple[DataCenter, ...] = Field(min_length=1)

    _name = field_validator("name")(_check_name)


# What every client connection string carries so a silently lost server cannot hang a client
# (measured on a silent partition, ../shared/NETNS-NOTES.md). Loopback's refusals hide all of this.
CLIENT_TIMEOUTS: dict[str, str] = {
    # A new connection to a silent host: 134 s with nothing set; libpq 15 enforces at least 2 s.
    "connect_timeout": "2",
    # Unacknowledged sends (a query sent after the cut, a connect's handshake): 1.0-1.9 s instead of hours.
    "tcp_user_timeout": "1000",
    # An idle or waiting connection to a silent host: keepalives 1/1/3 end it in 3.7 s (1.6 s together
    # with tcp_user_timeout) instead of the kernel's two hours.
    "keepalives": "1",
    "keepalives_idle": "1",
    "keepalives_interval": "1",
    "keepalives_count": "3",
}


class PortRange(_Model):
    """Ports the lab hands out, in order, to every server that has no explicit port."""

    base: int = Field(25400, ge=1024, le=65000)
    span: int = Field(200, ge=10, le=5000)

    @property
    def end(self) -> int:
        return self.base + self.span


class ZooKeeperSpec(_Model):
    tick_time_ms: int = Field(500, ge=100, le=10000)
    init_limit: int = Field(10, ge=1)
    sync_limit: int = Field(4, ge=1)
    session_timeout_ms: int = Field(2000, ge=200)
    # The node agents' own sessions: their self-fencing bound follows from it (agent.rules).
    # Longer than the controllers': an agent must ride out a ZooKeeper leader election (up to
    # ~1 s measured) without fencing a healthy primary. Default: 7 ticks (3.5 s at 500 ms).
    agent_session_timeout_ms: int | None = Field(None, ge=200)
    # Data centres that run one ZooKeeper server each; empty means every data centre.
    datacenters: tuple[str, ...] = ()

    @property
    def agent_session_ms(self) -> int:
        return self.agent_session_timeout_ms or 7 * self.tick_time_ms


class ControllerSpec(_Model):
    probe_interval_ms: int = Field(100, ge=10, le=10000)
    # Bounds every probe client-side (connect_timeout, tcp_user_timeout, and a deadline that cuts
    # the socket: a stalled server's kernel acknowledges everything, so only that ends the wait).
    # A silent or stalled primary costs failure_threshold x this before it counts as failed: 2 s.
    probe_timeout_ms: int = Field(1000, ge=50, le=30000)
    failure_threshold: int = Field(2, ge=1, le=20)
    anti_flap_seconds: float = Field(60.0, ge=0)
    rejoin_delay_seconds: float = Field(2.0, ge=0)
    # Data centres that run one controller each; empty means every data centre.
    datacenters: tuple[str, ...] = ()


class PostgresSpec(_Model):
    bin_dir: str = "/usr/lib/postgresql/15/bin"
    os_user: str = "postgres"
    wal_segsize_mb: int = Field(1, ge=1, le=1024)
    wal_retrieve_retry_interval_ms: int = Field(50, ge=1)
    # Silent loss of the primary (its host or link gone, not a refusing port): the standby's
    # walreceiver ends the stream 1.8 s after the cut at 2 s (measured; PostgreSQL's 60 s default: 59.8 s).
    # A stall shorter than this, under load, keeps the standbys streaming (decisions.stall_tolerance_s).
    wal_receiver_timeout_ms: int = Field(2000, ge=100)
    # The primary drops a silent standby's walsender after this (default 60 s: a dead standby shows
    # as streaming, and holds a synchronous slot in the count, for a minute).
    wal_sender_timeout_ms: int = Field(2000, ge=100)
    shared_buffers: str = "32MB"

    @field_validator("wal_segsize_mb")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"{value} is not a power of two: use 1, 2, 4, ... 1024 (initdb --wal-segsize)")
        return value


class MemberRole(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"


class Member(_Model):
    name: str
    datacenter: str
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    role: MemberRole = MemberRole.REPLICA
    priority: int = Field(100, ge=0, le=1000)
    never_promote: bool = False

    _name = field_validator("name")(_check_name)

    @property
    def slot_name(self) -> str:
        """The physical replication slot that streams WAL to this member (slot names allow no '-')."""
        return self.name.replace("-", "_")


class DrLagMode(StrEnum):
    """What the DR lag bound does: alert only, or also hold the primary's commits (see DrLagPolicy)."""

    ALERT = "alert"
    BOUNDED = "bounded"


class WhenDrDown(StrEnum):
    """Bounded mode with the DR standby not streaming from the primary: availability or the bound."""

    RELEASE = "release"   # leave it out of the synchronous set: commits continue, the bound lapses (alerted)
    HOLD = "hold"         # keep it in: commits wait for it (the bound holds, availability pays)


class DrLagPolicy(_Model):
    """The cross-region RPO bound: how many seconds of commits the DR standby may lack.

    The DR standbys of a primary are the members in other regions that are not its quorum
    candidates (asynchronous by policy). Their lag is measured by the leader every round
    (``decisions.lag``); over ``max_seconds`` an event fires (``dr-lag-over``), and once back at
    or under ``resume_below_seconds`` another (``dr-lag-recovered``). In ``bounded`` mode the
    primary also holds its commits meanwhile: the most advanced DR standby joins its synchronous
    set until the lag is back under ``resume_below_seconds``.
    """

    max_seconds: float = Field(gt=0, le=86400)
    mode: DrLagMode = DrLagMode.ALERT
    # Hysteresis: the alert clears, and a held DR standby leaves the synchronous set, only at or
    # below this (default: half of max_seconds).
    resume_below_seconds: float | None = Field(None, ge=0)
    when_down: WhenDrDown = WhenDrDown.RELEASE

    @model_validator(mode="after")
    def _below_max(self) -> DrLagPolicy:
        if self.resume_below_seconds is not None and self.resume_below_seconds >= self.max_seconds:
            raise ValueError(
                f"resume_below_seconds {self.resume_below_seconds:g} is not below max_seconds {self.max_seconds:g}; "
                "set it lower (it is the hysteresis: default half of max_seconds)"
            )
        return self

    @property
    def resume_seconds(self) -> float:
        return self.max_seconds / 2 if self.resume_below_seconds is None else self.resume_below_seconds


class DrFailover(StrEnum):
    """Whether the DR standby is promoted when the primary's whole region is lost."""

    MANUAL = "manual"        # only by an operator: drctl failover --to M --accept-data-loss
    AUTOMATIC = "automatic"  # by the leader, once every member and agent of the region is gone


class ReplicationPolicy(_Model):
    """Synchronous quorum inside the primary's region, asynchronous across regions.

    ``synchronous`` lists the quorum candidates; empty means every member in the initial
    primary's region. ``quorum`` is how many of them (besides the primary) must confirm
    each commit: PostgreSQL's ``ANY n (...)``. With ``targets.rpo_seconds: 0`` only the
    candidates outside the primary's data centre count (see :meth:`Topology.confirming_members`),
    so losing any one data centre is provably lossless. There is no switch to promote
    without that proof: only an operator's ``drctl failover --to M --accept-data-loss`` does.
    """

    quorum: int = Field(1, ge=0)
    synchronous: tuple[str, ...] = ()
    # Members (usually in the remote region) that join the quorum only while fewer than
    # ``quorum`` in-region candidates are attached to the primary: commits then wait for a
    # cross-region confirmation instead of stopping, and zero loss holds throughout.
    fallback: tuple[str, ...] = ()
    # The cross-region RPO bound on the asynchronous DR standby's lag; none: unmeasured.
    dr_lag: DrLagPolicy | None = None
    # The primary's whole region lost: promote the DR standby by an operator's command only
    # (manual), or by the leader itself once the loss is confirmed (automatic; data may be lost).
    dr_failover: DrFailover = DrFailover.MANUAL


class Targets(_Model):
    rto_seconds: float = Field(30.0, gt=0)
    rpo_seconds: float = Field(0.0, ge=0)
    availability_percent: float = Field(99.99, gt=0, lt=100)
    # A whole region lost (drills/region-loss.yaml): writes back in the other region within
    # region_rto_seconds, and at most region_rpo_seconds of acknowledged writes lost.
    region_rto_seconds: float = Field(30.0, gt=0)
    region_rpo_seconds: float = Field(60.0, ge=0)


class IncidentKind(StrEnum):
    """The unplanned failures an availability projection counts (``slo.incidents_per_year`` keys).

    Each maps to the drill faults that measure its recovery (orchestrator.slo.evidence); a kind
    no stored drill measured is reported as unmeasured.
    """

    PRIMARY_CRASH = "primary-crash"
    DATACENTER_OUTAGE = "datacenter-outage"
    REGION_LOSS = "region-loss"
    CONTROLLER_LEADER_CRASH = "controller-leader-crash"
    ZOOKEEPER_SERVER_LOSS = "zookeeper-server-loss"


_INCIDENT_KINDS = ", ".join(k.value for k in IncidentKind)


def _default_incidents() -> dict[IncidentKind, float]:
    return {IncidentKind.PRIMARY_CRASH: 12.0, IncidentKind.DATACENTER_OUTAGE: 2.0, IncidentKind.REGION_LOSS: 0.2}


class Slo(_Model):
    """A cluster's service-level objectives beyond the targets (orchestrator.slo uses them).

    ``write_latency_p99_ms``: the workload's p99 write (transfer) latency objective, which the
    capacity run ramps against and a game day checks. ``max_error_percent``: the share of
    failed requests at which a capacity step counts as broken. ``incidents_per_year``: the
    expected rate of each unplanned failure; ``switchovers_per_year``: planned maintenance.
    """

    write_latency_p99_ms: float = Field(50.0, gt=0, le=600_000)
    max_error_percent: float = Field(1.0, ge=0, lt=100)
    incidents_per_year: dict[IncidentKind, float] = Field(default_factory=_default_incidents)
    switchovers_per_year: float = Field(12.0, ge=0, le=100_000)

    @field_validator("incidents_per_year", mode="before")
    @classmethod
    def _kinds(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, rate in value.items():
                if key not in IncidentKind._value2member_map_:
                    raise ValueError(f"unknown incident kind {key!r}; use one of {_INCIDENT_KINDS}")
                if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 100_000:
                    raise ValueError(f"{key}: {rate!r} is not a rate; give incidents per year, a number >= 0")
        return value


class Compression(StrEnum):
    """How base backups and archived WAL are compressed in the object store (pgBackRest's compress-type)."""

    NONE = "none"
    GZ = "gz"
    LZ4 = "lz4"
    ZST = "zst"


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENDPOINT_RE = re.compile(r"^https://(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?/?$")


class ReplicaSpec(_Model):
    """A second S3 endpoint (the other region's store) the backup bucket is copied to (``drctl backup
    replicate``): every object of the cluster's repository missing there, or of another size, is copied."""

    endpoint: str
    bucket: str
    region: str = "us-east-1"
    credentials_file: str
    ca_file: str = ""
    # The leader runs 'drctl backup replicate' on this cron (UTC); None: only by hand.
    schedule: str | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return BackupSpec._cron(value)

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        return BackupSpec._https(value)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return BackupSpec._bucket(value)

    @field_validator("credentials_file")
    @classmethod
    def _credentials_path(cls, value: str) -> str:
        return BackupSpec._credentials_path(value)


class BackupSpec(_Model):
    """Where a cluster's base backups and WAL archive go: an S3-compatible endpoint (orchestrator.backup).

    No secrets here: ``credentials_file`` names a mode-0600 JSON file holding ``access_key``
    and ``secret_key`` (a relative path is resolved against the lab directory). ``ca_file``
    is the PEM that signs the endpoint's TLS certificate (empty: the system's CAs).
    """

    endpoint: str
    bucket: str
    region: str = "us-east-1"
    credentials_file: str
    ca_file: str = ""
    # Encryption at rest: a mode-0600 file holding the repository's passphrase (relative: the lab
    # directory); the engine encrypts every backup file and WAL segment with AES-256-CBC before it
    # leaves the host. Empty: not encrypted (the store's own server-side encryption only).
    encryption_key_file: str = ""
    # The objects' key prefix in the bucket; empty means /<topology>/<cluster>.
    prefix: str = ""
    retention_full: int = Field(2, ge=1, le=100)
    compression: Compression = Compression.LZ4
    process_max: int = Field(2, ge=1, le=32)
    # Push WAL through the engine's asynchronous archiver (parallel, one connection for many
    # segments: drains a backlog ≈ 2x faster) instead of one engine process per segment (the
    # default: ≈ 4x lower lag in steady state, see the README). Neither mode ever drops WAL.
    archive_async: bool = False
    # The leader's schedule (cron, five fields, UTC): a full base backup, each then proven by a
    # verified restore; and re-verification of the newest backup. None: not scheduled.
    schedule: str | None = None
    verify_schedule: str | None = None
    # pg_wal's budget while the store is unreachable (the archive-outage drill judges its peak).
    max_pg_wal_mb: int = Field(1024, ge=16)
    # archive-failed also when a completed segment has waited this long (archive_command hanging:
    # the engine retries an unreachable store for 40-80 s before it fails).
    archive_stall_alert_s: float = Field(30.0, gt=0, le=86400)
    # The other region's copy of the bucket (None: no replication).
    replica: ReplicaSpec | None = None

    @field_validator("schedule", "verify_schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and (len(value.split()) != 5 or not croniter.is_valid(value)):
            raise ValueError(f"{value!r} is not a valid cron expression: give five fields, minute hour day month "
                             "weekday (e.g. '0 2 * * *' for 02:00 UTC daily)")
        return value

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        match = _ENDPOINT_RE.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not an https://HOST[:PORT] URL; the backup engine (pgBackRest) speaks only HTTPS "
                "to S3, so give e.g. https://127.0.0.1:9000"
            )
        if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
            raise ValueError(f"{value!r}: port {match['port']} is outside 1-65535; give the store's S3 port")
        return value.rstrip("/")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _BUCKET_RE.match(value) or ".." in value:
            raise ValueError(
                f"{value!r} is not a valid S3 bucket name: use 3-63 lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("credentials_file")
    @classmethod
    def _credentials_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty path: name the JSON file holding access_key and secret_key (mode 0600)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", value):
            raise ValueError(f"{value!r} is not a key prefix like /lab/payments: use '/'-separated names")
        return value

    @property
    def host(self) -> str:
        match = _ENDPOINT_RE.match(self.endpoint)
        assert match is not None  # validated
        return match["host"].strip("[]")

    @property
    def port(self) -> int:
        match = _ENDPOINT_RE.match(self.endpoint)
        assert match is not None  # validated
        return int(match["port"]) if match["port"] else 443


class Cluster(_Model):
    name: str
    database: str = ""
    members: tuple[Member, ...] = Field(min_length=1)
    replication: ReplicationPolicy = ReplicationPolicy()
    targets: Targets = Targets()
    # Service-level objectives: latency, incident rates, planned maintenance (orchestrator.slo).
    slo: Slo = Slo()
    # Base backups and WAL archive to S3 (orchestrator.backup); none when absent.
    backup: BackupSpec | None = None
    # Whether drills, game days, soaks and capacity runs may target this cluster (a production
    # cluster says "forbidden" and opts in for a planned drill by changing it to "allowed").
    drills: Literal["allowed", "forbidden"] = "allowed"

    _name = field_validator("name")(_check_name)

    def require_drills_allowed(self) -> None:
        """:raises InvalidInput: the topology forbids drills on this cluster."""
        if self.drills == "forbidden":
            raise InvalidInput(f"clusters.{self.name}.drills: the topology forbids drills on {self.name}; set "
                               "drills: allowed to opt in for a planned drill")

    @model_validator(mode="after")
    def _default_database(self) -> Cluster:
        if not self.database:
            object.__setattr__(self, "database", self.name.replace("-", "_"))
        return self

    def member(self, name: str) -> Member:
        for member in self.members:
            if member.name == name:
                return member
        known = ", ".join(m.name for m in self.members)
        raise KeyError(f"cluster {self.name!r} has no member {name!r}; members are {known}")

    @property
    def initial_primary(self) -> Member:
        return next(m for m in self.members if m.role is MemberRole.PRIMARY)


class ApiSpec(_Model):
    """The operator REST API every controller serves (orchestrator.api) on its ``api:<dc>`` port.

    Relative paths are resolved against the lab directory. ``tls``: serve HTTPS with
    ``cert_file``/``key_file`` (the lab generates a self-signed pair when they are missing).
    ``allow``: source networks allowed to connect (empty: any). ``failed_logins`` failed
    logins from one address within ``failed_login_window_s`` lock it out (429) for the window.
    """

    tokens_file: str = "api/tokens.json"
    tls: bool = True
    cert_file: str = "api/cert.pem"
    key_file: str = "api/key.pem"
    allow: tuple[str, ...] = ()
    failed_logins: int = Field(5, ge=1, le=1000)
    failed_login_window_s: float = Field(60.0, gt=0, le=86400)
    request_timeout_s: float = Field(60.0, ge=1, le=3600)
    # /metrics without a token (Prometheus scrapes without one, like Patroni's and CloudNativePG's);
    # true: /metrics needs a viewer token like every other read.
    metrics_token: bool = False

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an address or network: give e.g. 127.0.0.1 or "
                                 "10.0.0.0/8") from None
        return value


class HealthSpec(_Model):
    """Per-member health endpoints for load balancers, served by each node agent (orchestrator.agent.health).

    Each agent listens (plain HTTP, no token: HAProxy sends none) on its ``health:<cluster>:<member>``
    port at its member's address: ``/primary``, ``/replica``, ... with Patroni's status codes, and
    ``/metrics`` when ``metrics`` is true. ``drctl lab haproxy`` serves each cluster's read-write and
    read-only frontends on the ``haproxy:<cluster>:rw`` / ``haproxy:<cluster>:ro`` ports.
    """

    metrics: bool = True
    # HAProxy's health-check interval (ms), and how many failed / passed checks mark a server down / up.
    check_interval_ms: int = Field(500, ge=50, le=60000)
    fall: int = Field(2, ge=1, le=100)
    rise: int = Field(1, ge=1, le=100)


class Topology(_Model):
    name: str
    regions: tuple[Region, ...] = Field(min_length=1)
    ports: PortRange = PortRange()
    zookeeper: ZooKeeperSpec = ZooKeeperSpec()
    controller: ControllerSpec = ControllerSpec()
    postgres: PostgresSpec = PostgresSpec()
    clusters: tuple[Cluster, ...] = Field(min_length=1)
    api: ApiSpec | None = None
    health: HealthSpec | None = None
    alerts: AlertsSpec | None = None   # orchestrator/alerts/config.py

    _name = field_validator("name")(_check_name)

    # ---- lookups -------------------------------------------------------------------------

    @property
    def datacenters(self) -> tuple[DataCenter, ...]:
        return tuple(dc for region in self.regions for dc in region.datacenters)

    def datacenter(self, name: str) -> DataCenter:
        for dc in self.datacenters:
            if dc.name == name:
                return dc
        known = ", ".join(dc.name for dc in self.datacenters)
        raise KeyError(f"no data centre {name!r}; data centres are {known}")

    def region_of(self, datacenter: str) -> str:
        for region in self.regions:
            if any(dc.name == datacenter for dc in region.datacenters):
                return region.name
        raise KeyError(f"no data centre {datacenter!r}")

    def cluster(self, name: str) -> Cluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        known = ", ".join(c.name for c in self.clusters)
        raise KeyError(f"no cluster {name!r}; clusters are {known}")

    @property
    def zookeeper_datacenters(self) -> tuple[str, ...]:
        return self.zookeeper.datacenters or tuple(dc.name for dc in self.datacenters)

    @property
    def controller_datacenters(self) -> tuple[str, ...]:
        return self.controller.datacenters or tuple(dc.name for dc in self.datacenters if not dc.witness)

    def datacenters_of(self, region: str) -> tuple[str, ...]:
        return tuple(dc.name for r in self.regions if r.name == region for dc in r.datacenters)

    def member_address(self, member: Member) -> str:
        dc = self.datacenter(member.datacenter)
        if member.host is None:
            return dc.address
        return next(h.address for h in dc.hosts if h.name == member.host)

    def synchronous_members(self, cluster: Cluster) -> tuple[str, ...]:
        """The quorum candidates: explicit, or every member in the initial primary's region."""
        if cluster.replication.synchronous:
            return cluster.replication.synchronous
        region = self.region_of(cluster.initial_primary.datacenter)
        return tuple(m.name for m in cluster.members if self.region_of(m.datacenter) == region)

    def confirming_members(self, cluster: Cluster, primary: Member, names: tuple[str, ...]) -> tuple[str, ...]:
        """Those of ``names`` whose confirmation counts for ``primary``'s commits.

        With ``targets.rpo_seconds: 0`` only members outside the primary's data centre: a
        commit confirmed inside it could be lost with it. Otherwise every name (a server
        never counts itself, so listing the primary is harmless).
        """
        if cluster.targets.rpo_seconds != 0:
            return names
        datacenter = {m.name: m.datacenter for m in cluster.members}
        return tuple(n for n in names if datacenter.get(n) != primary.datacenter)

    def synchronous_standby_names(self, cluster: Cluster, extra: tuple[str, ...] = ()) -> str:
        """PostgreSQL's quorum setting for the initial primary, rendered into every member's file.

        Without the data-centre rule (a positive RPO) the string is valid on any member, as a
        server never counts itself. With it, every promotion first gives the target its own
        list (``decisions.Policy.standby_names``), so the file's value only matters on the
        initial primary. ``extra`` adds fallback members while the quorum is short.
        """
        if cluster.replication.quorum == 0:
            return ""
        members = self.synchronous_members(cluster)
        listed = (*members, *(e for e in extra if e not in members))
        names = ", ".join(f'"{name}"' for name in self.confirming_members(cluster, cluster.initial_primary, listed))
        return f"ANY {cluster.replication.quorum} ({names})"

    # ---- ports ---------------------------------------------------------------------------

    def port_plan(self) -> dict[str, int]:
        """Every server's port, keyed ``zk:<dc>:client|peer|election``, ``pg:<cluster>:<member>``, ``api:<dc>``,
        ``health:<cluster>:<member>`` and ``haproxy:<cluster>:rw|ro``.

        Explicit member ports are kept; every other server gets the next free port of the
        range, in topology order, so the plan is stable for a given file.
        """
        taken = {m.port for c in self.clusters for m in c.members if m.port is not None}
        free = (p for p in range(self.ports.base, self.ports.end) if p not in taken)
        plan: dict[str, int] = {}
        try:
            for dc in self.zookeeper_datacenters:
                for kind in ("client", "peer", "election"):
                    plan[f"zk:{dc}:{kind}"] = next(free)
            for cluster in self.clusters:
                for member in cluster.members:
                    plan[f"pg:{cluster.name}:{member.name}"] = (
                        member.port if member.port is not None else next(free)
                    )
            if self.api is not None:   # after every other server: adding the API moves no port
                for dc in self.controller_datacenters:
                    plan[f"api:{dc}"] = next(free)
            if self.health is not None:   # after the API: adding health endpoints moves no port
                for cluster in self.clusters:
                    for member in cluster.members:
                        plan[f"health:{cluster.name}:{member.name}"] = next(free)
                for cluster in self.clusters:
                    for kind in ("rw", "ro"):
                        plan[f"haproxy:{cluster.name}:{kind}"] = next(free)
        except StopIteration:
            raise ValueError(
                f"ports: the range {self.ports.base}-{self.ports.end - 1} is too small for every server; "
                "raise ports.span"
            ) from None
        return plan

    def port_address(self, key: str) -> str:
        """The address a ``port_plan`` key's server listens on."""
        kind, scope, name = [*key.split(":"), ""][:3]
        if kind in ("zk", "api"):
            return self.datacenter(scope).address
        cluster = self.cluster(scope)
        if kind == "haproxy":   # the lab's load balancer runs beside the initial primary
            return self.datacenter(cluster.initial_primary.datacenter).address
        return self.member_address(cluster.member(name))

    def member_port(self, cluster: Cluster, member: Member) -> int:
        return self.port_plan()[f"pg:{cluster.name}:{member.name}"]

    def zookeeper_hosts(self) -> str:
        """The kazoo/ZooKeeper connection string listing every server."""
        plan = self.port_plan()
        return ",".join(
            f"{self.datacenter(dc).address}:{plan[f'zk:{dc}:client']}" for dc in self.zookeeper_datacenters
        )

    def connection_string(self, cluster: Cluster, *, user: str, password: str, dbname: str = "") -> str:
        """A libpq multi-host string that always lands on the writable primary."""
        hosts = ",".join(self.member_address(m) for m in cluster.members)
        ports = ",".join(str(self.member_port(cluster, m)) for m in cluster.members)
        options = "&".join(f"{k}={v}" for k, v in CLIENT_TIMEOUTS.items())
        return (
            f"postgresql://{user}:{password}@/{dbname or cluster.database}"
            f"?host={hosts}&port={ports}&target_session_attrs=read-write&{options}"
        )

    # ---- validation ----------------------------------------------------------------------

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        for problem in _contradictions(self):
            raise ValueError(problem)
        return self


def _duplicates(names: list[str]) -> Iterator[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            yield name
        seen.add(name)


def _contradictions(topo: Topology) -> Iterator[str]:
    """Yield one message per contradiction, each naming the field path and the fix."""
    for dup in _duplicates([r.name for r in topo.regions]):
        yield f"regions.{dup}: region name used twice; give each region a unique name"
    for dup in _duplicates([dc.name for dc in topo.datacenters]):
        yield f"regions.*.datacenters.{dup}: data centre name used twice; give each a unique name"
    for dc in topo.datacenters:
        for dup in _duplicates([h.name for h in dc.hosts]):
            yield f"datacenters.{dc.name}.hosts.{dup}: host name used twice; give each host a unique name"
    dc_names = {dc.name for dc in topo.datacenters}
    known_dcs = ", ".join(sorted(dc_names))
    for field, names in (
        ("zookeeper.datacenters", topo.zookeeper.datacenters),
        ("controller.datacenters", topo.controller.datacenters),
    ):
        for name in names:
            if name not in dc_names:
                yield f"{field}: unknown data centre {name!r}; use one of {known_dcs}"
        for dup in _duplicates(list(names)):
            yield f"{field}: data centre {dup!r} listed twice; list each once"
    if len(topo.zookeeper_datacenters) % 2 == 0:
        yield (
            f"zookeeper.datacenters: {len(topo.zookeeper_datacenters)} servers cannot form a majority "
            "after a split; use an odd number (3 or 5)"
        )
    yield from _witness_contradictions(topo)
    if not topo.zookeeper.session_timeout_ms >= 2 * topo.zookeeper.tick_time_ms:
        yield (
            f"zookeeper.session_timeout_ms: {topo.zookeeper.session_timeout_ms} is below 2 x tick_time_ms "
            f"({2 * topo.zookeeper.tick_time_ms}); ZooKeeper would silently raise it, so set it at least that"
        )
    agent_ms, tick = topo.zookeeper.agent_session_ms, topo.zookeeper.tick_time_ms
    if not 2 * tick <= agent_ms <= 20 * tick:
        yield (f"zookeeper.agent_session_timeout_ms: {agent_ms} is outside the {2 * tick}..{20 * tick} ms "
               f"ZooKeeper grants with tick_time_ms {tick}; set it inside that range")
    elif min(agent_ms / 2, agent_ms - tick - 250) < 80:
        yield (f"zookeeper.agent_session_timeout_ms: {agent_ms} leaves an agent no time to fence before its "
               f"session can expire (tick {tick} ms, fence 250 ms); raise it to at least {tick + 350}")
    for dup in _duplicates([c.name for c in topo.clusters]):
        yield f"clusters.{dup}: cluster name used twice; give each cluster a unique name"
    for cluster in topo.clusters:
        yield from _cluster_contradictions(topo, cluster, known_dcs)
    try:
        plan = topo.port_plan()
    except ValueError as exc:
        yield str(exc)
        return
    yield from _port_clashes(topo, plan)


def _witness_contradictions(topo: Topology) -> Iterator[str]:
    """A witness site runs one ZooKeeper server and nothing else."""
    for dc in (dc for dc in topo.datacenters if dc.witness):
        if dc.name not in topo.zookeeper_datacenters:
            yield (f"zookeeper.datacenters: the witness site {dc.name!r} is not listed, so it runs nothing; "
                   f"add {dc.name!r} to zookeeper.datacenters (or drop witness: true)")
        if dc.name in topo.controller.datacenters:
            yield (f"controller.datacenters: {dc.name!r} is a witness site (a ZooKeeper server only); "
                   "run controllers in the data centres that hold members")
        for cluster in topo.clusters:
            for member in cluster.members:
                if member.datacenter == dc.name:
                    yield (f"clusters.{cluster.name}.members.{member.name}.datacenter: {dc.name!r} is a witness "
                           "site (a ZooKeeper server only); place the member in another data centre")


def warnings(topo: Topology) -> list[str]:
    """What is valid but unsafe, one line each naming the fix (``drctl validate``, ``drctl lab up``).

    A region that holds a majority of the ZooKeeper servers takes coordination with it when it
    is lost: the other region's controller can then neither lead nor promote its DR standby.
    """
    found = []
    servers = topo.zookeeper_datacenters
    majority = len(servers) // 2 + 1
    for region in topo.regions:
        here = [dc for dc in servers if topo.region_of(dc) == region.name]
        if len(topo.regions) > 1 and len(here) >= majority:
            found.append(
                f"zookeeper.datacenters: region {region.name!r} holds {len(here)} of the {len(servers)} ZooKeeper "
                f"servers ({', '.join(here)}), a majority: losing {region.name!r} stops coordination everywhere "
                "and the DR site cannot be promoted; add a witness site (a data centre with witness: true running "
                "only a ZooKeeper server) in a third location and spread the servers one per location"
            )
    return found


def _cluster_contradictions(topo: Topology, cluster: Cluster, known_dcs: str) -> Iterator[str]:
    path = f"clusters.{cluster.name}"
    for dup in _duplicates([m.name for m in cluster.members]):
        yield f"{path}.members.{dup}: member name used twice; give each member a unique name"
    dc_names = {dc.name for dc in topo.datacenters}
    for member in cluster.members:
        if member.datacenter not in dc_names:
            yield (
                f"{path}.members.{member.name}.datacenter: unknown data centre {member.datacenter!r}; "
                f"use one of {known_dcs}"
            )
            continue
        hosts = [h.name for h in topo.datacenter(member.datacenter).hosts]
        if member.host is not None and member.host not in hosts:
            yield (
                f"{path}.members.{member.name}.host: data centre {member.datacenter!r} has no host "
                f"{member.host!r}; use one of {', '.join(hosts)}"
            )
    primaries = [m.name for m in cluster.members if m.role is MemberRole.PRIMARY]
    if len(primaries) != 1:
        yield (
            f"{path}.members: {len(primaries)} members have role primary ({', '.join(primaries) or 'none'}); "
            "mark exactly one member 'role: primary'"
        )
        return
    primary = cluster.initial_primary
    if primary.datacenter not in dc_names:
        return  # already reported above; the region checks below need a placed primary
    if primary.never_promote:
        yield (
            f"{path}.members.{primary.name}.never_promote: the initial primary cannot be never_promote; "
            "drop the flag or make another member primary"
        )
    members = {m.name for m in cluster.members}
    sync = topo.synchronous_members(cluster)
    for name in cluster.replication.synchronous:
        if name not in members:
            yield (
                f"{path}.replication.synchronous: unknown member {name!r}; "
                f"use members of the cluster ({', '.join(sorted(members))})"
            )
    if any(name not in members for name in sync):
        return
    for dup in _duplicates(list(sync)):
        yield f"{path}.replication.synchronous: member {dup!r} listed twice; list each once"
    for name in cluster.replication.fallback:
        if name not in members:
            yield (f"{path}.replication.fallback: unknown member {name!r}; "
                   f"use members of the cluster ({', '.join(sorted(members))})")
        elif name in sync:
            yield (f"{path}.replication.fallback: {name!r} is already a quorum candidate; "
                   "list only members outside replication.synchronous")
    primary_region = topo.region_of(primary.datacenter)
    for name in sync:
        member = cluster.member(name)
        if member.datacenter in dc_names and topo.region_of(member.datacenter) != primary_region:
            yield (
                f"{path}.replication.synchronous: {name!r} is in region "
                f"{topo.region_of(member.datacenter)!r}, not the primary's region {primary_region!r}; "
                "cross-region members replicate asynchronously, so remove it from the list"
            )
    if cluster.replication.synchronous and primary.name not in sync:
        yield (
            f"{path}.replication.synchronous: the primary {primary.name!r} is not a quorum candidate; "
            "add it, so the quorum stays valid after a switchback"
        )
    standbys = len([n for n in sync if n != primary.name])
    if cluster.replication.quorum > standbys:
        yield (
            f"{path}.replication.quorum: {cluster.replication.quorum} is larger than the {standbys} synchronous "
            f"standby candidate(s) ({', '.join(n for n in sync if n != primary.name) or 'none'}); "
            "lower the quorum or add members in the primary's region"
        )
    if cluster.targets.rpo_seconds == 0 and cluster.replication.quorum == 0:
        yield (
            f"{path}.targets.rpo_seconds: 0 needs synchronous replication; "
            "set replication.quorum to at least 1 or accept a positive RPO"
        )
    yield from _outside_datacenter_contradictions(topo, cluster, sync)
    yield from _dr_lag_contradictions(topo, cluster, sync)


def _dr_lag_contradictions(topo: Topology, cluster: Cluster, sync: tuple[str, ...]) -> Iterator[str]:
    """A DR lag bound needs an asynchronous member in another region, and a bound the probes can resolve."""
    policy = cluster.replication.dr_lag
    if policy is None:
        return
    path = f"clusters.{cluster.name}.replication.dr_lag"
    region = topo.region_of(cluster.initial_primary.datacenter)
    placed = {dc.name for dc in topo.datacenters}
    dr = [m.name for m in cluster.members
          if m.name not in sync and m.datacenter in placed and topo.region_of(m.datacenter) != region]
    if not dr:
        yield (f"{path}: no asynchronous member outside the primary's region {region!r} to measure "
               f"({policy.mode.value} mode needs a DR standby); add a member in another region, or remove dr_lag")
    resolution = 2 * topo.controller.probe_interval_ms / 1000
    if policy.max_seconds <= resolution:
        yield (f"{path}.max_seconds: {policy.max_seconds:g} is within two probe intervals ({resolution:g} s), "
               "the resolution of the measured lag; raise it")


def _outside_datacenter_contradictions(topo: Topology, cluster: Cluster, sync: tuple[str, ...]) -> Iterator[str]:
    """RPO 0: every member that may become primary needs ``quorum`` candidates outside its data centre.

    Those are the initial primary and every synchronous member that is not never_promote
    (a planned switchover elsewhere takes its quorum from every other data centre, and is
    refused when that is too small).
    """
    quorum = cluster.replication.quorum
    if cluster.targets.rpo_seconds != 0 or quorum == 0:
        return
    names = (cluster.initial_primary.name, *sync)
    for name in dict.fromkeys(names):
        member = cluster.member(name)
        if member.never_promote and name != cluster.initial_primary.name:
            continue
        outside = topo.confirming_members(cluster, member, sync)
        if len(outside) < quorum:
            yield (
                f"clusters.{cluster.name}.replication.synchronous: with targets.rpo_seconds 0 every commit must "
                f"be confirmed outside the primary's data centre, but {name} (in {member.datacenter}) would have "
                f"{len(outside)} quorum candidate(s) outside {member.datacenter} "
                f"({', '.join(outside) or 'none'}) for quorum {quorum}; add members of another data centre "
                f"to replication.synchronous, lower replication.quorum, mark {name} never_promote, "
                "or accept a positive RPO"
            )


def _port_clashes(topo: Topology, plan: dict[str, int]) -> Iterator[str]:
    users: dict[tuple[str, int], str] = {}
    for key, port in plan.items():
        kind, scope, name = [*key.split(":"), ""][:3]
        address = topo.port_address(key)
        label = {"pg": f"clusters.{scope}.members.{name}.port", "api": f"api.{scope}",
                 "health": f"health ({scope}/{name})", "haproxy": f"health (haproxy {scope} {name})"}.get(
            kind, f"zookeeper.{scope}.{name}")
        other = users.get((address, port))
        if other is not None:
            yield f"{label}: port {port} on {address} is already used by {other}; choose another port"
        users[(address, port)] = label


# ---- loading ----------------------------------------------------------------------------


# Fields a topology may still carry from an older release: why each went, and what to do.
REMOVED_FIELDS = {
    "allow_unproven_failover": (
        "this field was removed: automatic failover now never promotes without proven zero loss, and an "
        "unproven promotion is only an operator's 'drctl failover CLUSTER --to MEMBER --accept-data-loss'; "
        "delete the field"
    ),
}


def _removed(error: Any) -> str | None:
    loc = error["loc"]
    return REMOVED_FIELDS.get(str(loc[-1])) if error["type"] == "extra_forbidden" and loc else None


def _format_validation_error(source: str, exc: ValidationError) -> str:
    # A removed field is reported first: its message says why, where "unknown field" would not.
    first = next((e for e in exc.errors() if _removed(e) is not None), exc.errors()[0])
    loc = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if _removed(first) is not None:
        message = str(_removed(first))
    elif first["type"] == "extra_forbidden":
        message = "unknown field; remove it or check its spelling"
    elif first["type"] == "missing":
        message = "required field is missing; add it"
    prefix = f"{source}: " + (f"{loc}: " if loc else "")
    more = len(exc.errors()) - 1
    return prefix + message + (f" (and {more} more error(s))" if more else "")


def parse_topology(data: Any, *, source: str = "topology") -> Topology:
    """Validate already-parsed YAML; raise :class:`TopologyError` with a one-line message."""
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(_format_validation_error(source, exc)) from None


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology YAML file.

    :raises TopologyError: the file is missing, not a regular text file, not YAML, or contradicts itself.
    """
    path = Path(path)
    return parse_topology(read_yaml(path, "topology", TopologyError), source=str(path))


def with_port_base(topo: Topology, base: int) -> Topology:
    """The same topology on another port range (tests run beside a developer's lab)."""
    data = topo.model_dump(mode="json")
    data["ports"]["base"] = base
    return Topology.model_validate(data)
