"""Host operations as Ansible playbooks, run through ansible-runner: the only ansible_runner import.

The slow, thorough path next to :mod:`orchestrator.postgres`'s fast SQL path: rejoining an
old primary with ``pg_rewind`` (or a re-clone), fencing a member by its postmaster PID,
provisioning a new standby. The controller and the drills call :class:`PlaybookRunner`
after a failover, never on its critical path (a run costs ~1 s plus ~0.5 s per task).

:func:`inventory` turns the topology into an Ansible inventory: one host per topology host,
grouped by region, data centre and cluster. :func:`rejoin_extravars` renders what the member
playbooks need from a :class:`~orchestrator.pgserver.InstanceLayout`. The playbooks live in
the repository's ``playbooks/`` directory.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import ansible_runner

from orchestrator.errors import InvalidInput, PlaybookFailed
from orchestrator.pgserver import PG_HBA, InstanceLayout
from orchestrator.postgres import Credentials, Endpoint
from orchestrator.topology import Member, Topology

PLAYBOOK_DIR = Path(__file__).resolve().parent.parent / "playbooks"

# Ansible warns about group names that are not identifiers; topology names may contain '-'.
_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_PATTERN_SPECIAL = re.compile(r"[*?\[\]~!&]")
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Scalar = str | int | float | bool


# ---- inventory ------------------------------------------------------------------------------


def group_name(kind: str, name: str) -> str:
    """``region_east``, ``dc_dc1``, ``cluster_payments``: one namespace per kind, no '-'."""
    return f"{kind}_{_GROUP_UNSAFE.sub('_', name)}"


def member_host(topology: Topology, member: Member) -> str:
    """The inventory host a member runs on: the one to pass as ``limit``."""
    if member.host is not None:
        return member.host
    return topology.datacenter(member.datacenter).hosts[0].name


def _host_vars(address: str, region: str, datacenter: str, exec_prefix: list[str] | None) -> dict[str, Any]:
    host_vars: dict[str, Any] = {"ansible_host": address, "dr_region": region, "dr_datacenter": datacenter}
    if ipaddress.ip_address(address).is_loopback or exec_prefix is not None:
        # The lab: every "host" is this machine, reached without ssh, with the venv's Python.
        host_vars["ansible_connection"] = "local"
        host_vars["ansible_python_interpreter"] = "{{ ansible_playbook_python }}"
    if exec_prefix:
        host_vars["dr_exec_prefix"] = exec_prefix
    return host_vars


def inventory(topology: Topology, exec_prefixes: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """An Ansible inventory (YAML/JSON form) for every host of the topology.

    Groups: ``region_<region>`` (children: its data centres), ``dc_<dc>`` (its hosts) and
    ``cluster_<cluster>`` (the hosts its members run on). Host vars: ``ansible_host``, the
    host's ``dr_region`` and ``dr_datacenter``, and for loopback addresses (the lab) a local
    connection with the controller's own interpreter. ``exec_prefixes`` (the isolated lab: host
    -> ``ip netns exec NS setpriv ...``) makes a host local too, and gives it ``dr_exec_prefix``:
    the playbooks run its server commands through it, inside the host's network namespace.
    """
    hosts: dict[str, dict[str, Any]] = {}
    groups: dict[str, dict[str, Any]] = {}
    prefixes = exec_prefixes or {}
    for region in topology.regions:
        children: dict[str, dict[str, Any]] = {}
        for dc in region.datacenters:
            for host in dc.hosts:
                hosts[host.name] = _host_vars(host.address, region.name, dc.name, prefixes.get(host.name))
            groups[group_name("dc", dc.name)] = {"hosts": {host.name: {} for host in dc.hosts}}
            children[group_name("dc", dc.name)] = {}
        groups[group_name("region", region.name)] = {"children": children}
    for cluster in topology.clusters:
        members: dict[str, dict[str, str]] = {member_host(topology, m): {} for m in cluster.members}
        groups[group_name("cluster", cluster.name)] = {"hosts": members}
    return {"all": {"hosts": hosts, "children": groups}}


def _known_names(inv: Mapping[str, Any]) -> set[str]:
    return {"all", *inv["all"]["hosts"], *inv["all"]["children"]}


# ---- extra vars ------------------------------------------------------------------------------


def rejoin_extravars(layout: InstanceLayout, upstream: Endpoint, creds: Credentials) -> dict[str, Scalar]:
    """What ``rejoin.yml`` (and ``provision_replica.yml``) need to make ``layout`` a standby of ``upstream``.

    The member's rendered ``postgresql.conf``, ``pg_hba.conf`` and ``postgresql.auto.conf``
    (pointing at ``upstream`` over the member's slot), where its files live, and how
    ``pg_rewind`` reaches the upstream as superuser. The superuser password travels
    separately (``rewind_password``) so the playbook can hand it over in the environment,
    not on a command line.

    :raises InvalidInput: ``upstream`` is the member itself.
    """
    own = layout.endpoint
    if (upstream.address, upstream.port) == (own.address, own.port):
        raise InvalidInput(
            f"{layout.member.name}: cannot rejoin a member as a standby of itself ({own.address}:{own.port}); "
            "pass the current primary as upstream"
        )
    pg = layout.topology.postgres
    rewind_source = (
        f"host={upstream.address} port={upstream.port} user={creds.superuser} dbname=postgres "
        "connect_timeout=5 application_name=drctl-rejoin"
    )
    return {
        "member": layout.member.name,
        "pgdata": str(layout.data),
        "socket_dir": str(layout.socket_dir),
        "bin_dir": pg.bin_dir,
        "os_user": pg.os_user,
        "log_file": str(layout.log),
        "postgresql_conf": layout.postgresql_conf(),
        "pg_hba_conf": PG_HBA,
        "auto_conf": layout.auto_conf(upstream, creds),
        "upstream_name": upstream.name,
        "upstream_host": upstream.address,
        "upstream_port": upstream.port,
        "replication_user": creds.replication_user,
        "slot_name": layout.member.slot_name,
        "passfile": str(layout.passfile),
        "rewind_source": rewind_source,
        "rewind_password": creds.superuser_password,
    }


def fence_extravars(layout: InstanceLayout) -> dict[str, Scalar]:
    """What ``fence.yml`` needs to stop ``layout``'s server."""
    pg = layout.topology.postgres
    return {"member": layout.member.name, "pgdata": str(layout.data), "bin_dir": pg.bin_dir, "os_user": pg.os_user}


def _extravars_yaml(extravars: Mapping[str, Scalar]) -> str:
    """YAML with every string tagged ``!unsafe``: extra vars are data, never Jinja templates.

    (A ``{{`` in a password or a rendered file must reach the host as written.) A JSON
    string is a valid YAML double-quoted scalar, so ``json.dumps`` does the escaping.
    """
    lines = []
    for key, value in extravars.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidInput(f"extra var {key!r}: not a valid Ansible variable name; use letters, digits, '_'")
        if isinstance(value, str):
            lines.append(f"{key}: !unsafe {json.dumps(value)}")
        elif isinstance(value, bool | int | float):
            lines.append(f"{key}: {json.dumps(value)}")
        else:
            raise InvalidInput(f"extra var {key!r}: {type(value).__name__} is not a string, number or bool")
    return "\n".join(lines) + "\n"


# ---- running ---------------------------------------------------------------------------------


class PlaybookStatus(StrEnum):
    """ansible-runner's final status of a run."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"


@dataclass(frozen=True)
class PlaybookResult:
    """How one playbook run ended; ``failed_*`` are set only when it did not succeed."""

    playbook: str
    status: PlaybookStatus
    rc: int
    duration: float
    changed_tasks: tuple[str, ...] = ()
    failed_host: str | None = None
    failed_task: str | None = None
    message: str | None = None
    artifacts: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status is PlaybookStatus.SUCCESSFUL

    def summary(self) -> str:
        """One line naming the playbook, host, task and cause."""
        if self.ok:
            return f"playbook {self.playbook} succeeded in {self.duration:.1f}s"
        where = f" on {self.failed_host}" if self.failed_host else ""
        task = f" at task {self.failed_task!r}" if self.failed_task else ""
        cause = f": {self.message}" if self.message else ""
        see = f" (rc {self.rc}; see {self.artifacts})" if self.artifacts else f" (rc {self.rc})"
        return f"playbook {self.playbook} {self.status.value}{where}{task}{cause}{see}"


class PlaybookRunner:
    """Runs the repository's playbooks against the topology's hosts.

    Contract:

    * A run is not atomic. Each task is, at most, as atomic as its module: a failed run
      may leave a host half-way (e.g. a rejoin stopped after fencing). Every playbook is
      written to be re-run from the start after a failure, which is the recovery.
    * :meth:`run` blocks until ``ansible-playbook`` exits, ``timeout`` passes or
      :meth:`cancel` is called; it may be called from several threads (each run has its own
      artifacts and extra-vars file). It leaves the process's signal handlers alone
      (ansible-runner's default would take over SIGINT and SIGTERM for good).
    * Extra vars go to ``ansible-playbook`` through a mode-0600 file that is removed after
      the run, never on its command line; ``private_dir`` (mode 0700) keeps the last
      ``keep_artifacts`` runs' job events and output for post-mortems.

    :raises PlaybookFailed: from :meth:`run`, when the run failed, timed out, was cancelled,
        matched no host, or ansible-runner could not start it.
    :raises InvalidInput: from :meth:`run`, for an unknown playbook or limit, or bad extra vars.
    """

    def __init__(self, topology: Topology, private_dir: Path, *, timeout: float = 600.0,
                 keep_artifacts: int = 20, playbook_dir: Path = PLAYBOOK_DIR,
                 exec_prefixes: Mapping[str, list[str]] | None = None) -> None:
        self.topology = topology
        self.private_dir = private_dir.resolve()
        self.timeout = timeout
        self.keep_artifacts = keep_artifacts
        self.playbook_dir = playbook_dir
        self.inventory = inventory(topology, exec_prefixes)
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop the runs in flight (they end ``canceled``) and every later one: for shutdown."""
        self._cancelled.set()

    def _check(self, playbook: str, limit: str | None) -> None:
        if Path(playbook).name != playbook or not (self.playbook_dir / playbook).is_file():
            known = ", ".join(sorted(p.name for p in self.playbook_dir.glob("*.yml")))
            raise InvalidInput(f"playbook {playbook!r}: not in {self.playbook_dir}; use one of {known}")
        if limit is None or _PATTERN_SPECIAL.search(limit):
            return  # patterns with wildcards or operators are Ansible's to resolve
        known_names = _known_names(self.inventory)
        for name in filter(None, re.split(r"[:,]", limit)):
            if name not in known_names:
                raise InvalidInput(
                    f"limit {limit!r}: {name!r} is neither a host nor a group of the inventory; "
                    f"use one of {', '.join(sorted(known_names))}"
                )

    def _envvars(self) -> dict[str, str]:
        # ansible-playbook is found on PATH only (binary= would run it in raw mode, without
        # job events): put the interpreter's bin first, as it is not on PATH when run as
        # .venv/bin/python (else rc 127).
        venv_bin = str(Path(sys.executable).parent)
        return {"PATH": f"{venv_bin}:{_SYSTEM_PATH}", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"}

    def run(self, playbook: str, *, limit: str | None, extravars: Mapping[str, Scalar],
            check: bool = True, cancel: Callable[[], bool] | None = None) -> PlaybookResult:
        """Run ``playbook`` (a file name in ``playbooks/``) on the hosts ``limit`` selects.

        ``limit`` is an Ansible host pattern (a host or group name of :func:`inventory`, or
        ``None`` for every host). With ``check=False`` a failed run is returned, not raised.
        ``cancel``: polled during the run; once true the run ends ``canceled`` (as :meth:`cancel`
        does for every run).

        :raises PlaybookFailed: the run did not succeed (one line: playbook, host, task, cause).
        :raises InvalidInput: unknown playbook, a limit naming nothing in the inventory,
            extra vars that are not flat strings, numbers or bools.
        """
        self._check(playbook, limit)
        vars_text = _extravars_yaml(extravars)
        self.private_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.private_dir, 0o700)
        vars_file = self.private_dir / f"extravars-{uuid.uuid4().hex}.yml"
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(vars_text)
        started = time.monotonic()
        try:
            runner = ansible_runner.run(
                private_data_dir=str(self.private_dir),
                project_dir=str(self.playbook_dir),
                playbook=playbook,
                inventory=self.inventory,
                limit=limit,
                cmdline=f"-e @{shlex.quote(str(vars_file))}",
                envvars=self._envvars(),
                quiet=True,
                suppress_env_files=True,  # else the first run's env files are silently reused
                rotate_artifacts=self.keep_artifacts,
                timeout=max(1, round(self.timeout)),
                # Any callback keeps ansible-runner from installing its own SIGINT/SIGTERM handlers.
                cancel_callback=lambda: self._cancelled.is_set() or (cancel is not None and cancel()),
            )
        except Exception as exc:  # ansible-runner raises bare ConfigurationError, RuntimeError, ...
            raise PlaybookFailed(f"playbook {playbook}: ansible-runner could not run it ({exc})") from exc
        finally:
            vars_file.unlink(missing_ok=True)
        result = _result(playbook, runner, time.monotonic() - started)
        if check and not result.ok:
            raise PlaybookFailed(result.summary())
        return result


def _result(playbook: str, runner: Any, duration: float) -> PlaybookResult:
    events: list[dict[str, Any]] = list(runner.events)
    try:
        status = PlaybookStatus(runner.status)
    except ValueError:  # a run that never got going ("unstarted")
        status = PlaybookStatus.FAILED
    rc = int(runner.rc) if runner.rc is not None else -1
    artifacts = Path(runner.config.artifact_dir)
    changed = tuple(dict.fromkeys(
        str(e["event_data"].get("task", "")) for e in events
        if e.get("event") == "runner_on_ok" and e["event_data"].get("res", {}).get("changed")
    ))
    stats: Mapping[str, Any] = next((e["event_data"] for e in events if e.get("event") == "playbook_on_stats"), {})
    if status is PlaybookStatus.SUCCESSFUL and not stats.get("processed"):
        return PlaybookResult(playbook, PlaybookStatus.FAILED, rc, duration, changed,
                              message="the limit matched no host; nothing ran", artifacts=artifacts)
    if status is PlaybookStatus.SUCCESSFUL:
        return PlaybookResult(playbook, status, rc, duration, changed, artifacts=artifacts)
    failure = _last_failure(events)
    if failure is None:
        why = {PlaybookStatus.TIMEOUT: "timed out", PlaybookStatus.CANCELED: "was cancelled"}.get(
            status, f"ansible-playbook exited {rc} before any task failed")
        try:
            tail = _tail((artifacts / "stdout").read_text(errors="replace"))
        except OSError:
            tail = ""
        return PlaybookResult(playbook, status, rc, duration, changed,
                              message=f"{why}{': ' + tail if tail else ''}", artifacts=artifacts)
    data = failure["event_data"]
    return PlaybookResult(playbook, status, rc, duration, changed, failed_host=str(data.get("host")),
                          failed_task=str(data.get("task")), message=_cause(data.get("res", {})),
                          artifacts=artifacts)


def _last_failure(events: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    last = None
    for event in events:
        if event.get("event") == "runner_on_unreachable" or (
            event.get("event") == "runner_on_failed" and not event["event_data"].get("ignore_errors")
        ):
            last = event
    return last


def _cause(res: Mapping[str, Any]) -> str:
    """The most telling line of a failed task's result: the command's stderr beats "non-zero return code"."""
    for key in ("stderr", "stdout"):
        line = _tail(str(res.get(key) or ""))
        if line:
            rc = res.get("rc")
            return f"{line} (exit {rc})" if rc is not None else line
    results = res.get("results")
    if isinstance(results, list):  # a loop: the failed item's cause
        for item in results:
            if isinstance(item, Mapping) and item.get("failed"):
                return _cause(item)
    return _tail(str(res.get("msg") or "")) or "no message"


def _tail(text: str, limit: int = 600) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."
