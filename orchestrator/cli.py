"""``drctl``: the command line. The only module that prints and exits.

Every command resolves its topology and lab directory the same way (flags, then the
``DRCTL_TOPOLOGY`` / ``DRCTL_LAB_DIR`` environment, then ``topology/lab.yaml`` and
``.lab``), calls into the package, and turns an :class:`OrchestratorError` into one red
line and a non-zero exit: 2 for bad input, 1 for everything else.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.errors import InvalidInput, OrchestratorError
from orchestrator.lab import Lab, recorded_topology
from orchestrator.topology import Topology, load_topology

app = typer.Typer(add_completion=False, no_args_is_help=True, help="dr-orchestrator: PostgreSQL DR control.")
lab_app = typer.Typer(no_args_is_help=True, help="The local lab: real PostgreSQL + ZooKeeper on this machine.")
app.add_typer(lab_app, name="lab")

console = Console()
err_console = Console(stderr=True)

TopologyOpt = Annotated[
    Path | None, typer.Option("--topology", "-t", help="Topology YAML (default: topology/lab.yaml).")
]
LabDirOpt = Annotated[Path | None, typer.Option("--lab-dir", help="Lab state directory (default: .lab).")]


def _lab_dir(lab_dir: Path | None) -> Path:
    return (lab_dir or Path(os.environ.get("DRCTL_LAB_DIR", ".lab"))).resolve()


def _topology(topology: Path | None, lab_dir: Path | None = None) -> Topology:
    """An explicit file wins; otherwise the lab's recorded topology; otherwise the default file."""
    if topology is None and "DRCTL_TOPOLOGY" not in os.environ:
        recorded = recorded_topology(_lab_dir(lab_dir))
        if recorded is not None:
            return recorded
    return load_topology(topology or Path(os.environ.get("DRCTL_TOPOLOGY", "topology/lab.yaml")))


def _lab(topology: Path | None, lab_dir: Path | None, *, controllers: bool = True) -> Lab:
    return Lab(_topology(topology, lab_dir), _lab_dir(lab_dir), controllers=controllers)


@lab_app.command("up")
def lab_up(
    topology: TopologyOpt = None,
    lab_dir: LabDirOpt = None,
    controllers: Annotated[bool, typer.Option(help="Start one controller per data centre.")] = True,
) -> None:
    """Bring the topology to life (idempotent)."""
    lab = _lab(topology, lab_dir, controllers=controllers)
    started = time.monotonic()
    with console.status("bringing the lab up ..."):
        lab.up()
    console.print(f"lab up in {time.monotonic() - started:.1f}s at {lab.root}")
    _print_status(lab)


@lab_app.command("down")
def lab_down(
    lab_dir: LabDirOpt = None,
    keep_data: Annotated[bool, typer.Option(help="Stop processes but keep data directories.")] = False,
) -> None:
    """Stop every lab process by its PID and remove the lab directory."""
    root = _lab_dir(lab_dir)
    topo = recorded_topology(root)
    if topo is None:
        console.print(f"no lab at {root}; nothing to stop")
        return
    started = time.monotonic()
    Lab(topo, root).down(keep_data=keep_data)
    console.print(f"lab down in {time.monotonic() - started:.1f}s")


@lab_app.command("status")
def lab_status(lab_dir: LabDirOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Members, replication state and lag; ZooKeeper servers; controllers."""
    root = _lab_dir(lab_dir)
    topo = recorded_topology(root)
    if topo is None:
        raise InvalidInput(f"no lab at {root}; run 'drctl lab up' first or pass --lab-dir")
    lab = Lab(topo, root)
    if as_json:
        status = lab.status()
        print(json.dumps({"members": [r.__dict__ for r in status.members],
                          "services": [s.__dict__ for s in status.services],
                          "healthy": status.healthy}, indent=2, default=str))
        return
    if not _print_status(lab):
        raise typer.Exit(1)


def _print_status(lab: Lab) -> bool:
    status = lab.status()
    table = Table(title=f"lab {lab.topology.name} ({lab.root})")
    for column in ("data centre", "member", "role", "port", "pid", "replication", "lag (bytes)"):
        table.add_column(column)
    for r in status.members:
        table.add_row(r.datacenter, f"{r.cluster}/{r.member}", r.role.value, str(r.port), str(r.pid or "-"),
                      r.replication, "-" if r.lag_bytes is None else str(r.lag_bytes))
    for s in status.services:
        table.add_row(s.datacenter, s.service, "", str(s.port or "-"), str(s.pid or "-"), s.state, "")
    console.print(table)
    console.print("[green]healthy[/green]" if status.healthy else "[red]NOT healthy[/red]")
    return status.healthy


@app.command("connstr")
def connstr(cluster: str, topology: TopologyOpt = None, lab_dir: LabDirOpt = None) -> None:
    """Print the libpq multi-host connection string that always finds the primary."""
    lab = _lab(topology, lab_dir)
    try:
        target = lab.topology.cluster(cluster)
    except KeyError as exc:
        raise InvalidInput(f"cluster: {exc.args[0]}") from None
    print(lab.app_connection_string(target))


@app.command("validate")
def validate(topology: Annotated[Path, typer.Argument(help="Topology YAML to check.")]) -> None:
    """Check a topology file; print a one-line error naming the field and the fix."""
    topo = load_topology(topology)
    console.print(f"{topology}: valid topology {topo.name!r} with {len(topo.clusters)} cluster(s)")


def main() -> None:
    try:
        app(standalone_mode=False)
    except OrchestratorError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, InvalidInput) else 1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
