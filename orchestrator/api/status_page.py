"""The status page: an HTML shell (Jinja2) and a script that polls the JSON API with the user's token.

Included by :func:`orchestrator.api.app.create_app`. ``GET /`` and ``GET /status`` serve
the page and ``/status/static/status.js`` its script; neither holds any data, so they need
no token. The script asks for a token, keeps it in ``sessionStorage`` (gone when the tab
closes) and polls ``/api/v1/status`` and ``/api/v1/overview``; actions (switchover) use the
same routes as ``drctl --api``, so roles, audit and forwarding to the leader apply unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from orchestrator import operator
from orchestrator.api.app import PREFIX, ApiContext, Viewer
from orchestrator.api.overview import overview
from orchestrator.errors import OrchestratorError

HERE = Path(__file__).resolve().parent


def _runs(ctx: ApiContext) -> list[dict[str, Any]]:
    """The last drill runs with RTO/RPO, their targets and the report's URL (none without a drills directory)."""
    if ctx.drills_dir is None:
        return []
    from orchestrator.drills.report import list_reports

    out: list[dict[str, Any]] = []
    for entry in list_reports(operator.reports_dir(ctx.drills_dir)):
        report = entry.report
        if report is None:
            out.append({"run": entry.run_id, "error": entry.error})
            continue
        m = report.measurement
        out.append({"run": entry.run_id, "drill": report.drill, "cluster": report.cluster,
                    "started_at": report.started_at, "passed": report.verdict.passed,
                    "rto_seconds": m.outage.rto_seconds, "rpo_seconds": m.loss.rpo_seconds, "lost": m.loss.lost,
                    "targets": {"rto_seconds": report.targets.rto_seconds,
                                "rpo_seconds": report.targets.rpo_seconds},
                    "report": f"/api/v1/runs/{entry.run_id}/report.html"})
    return out


def status_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html", "j2"]))

    @router.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/status")

    @router.get("/status", response_class=HTMLResponse, summary="The status page (HTML; data via the JSON API)")
    def page() -> HTMLResponse:
        html = templates.get_template("status.html.j2").render(topology=ctx.topology.name, served_by=ctx.served_by,
                                                               prefix=PREFIX)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @router.get("/status/static/status.js", include_in_schema=False)
    def script() -> FileResponse:
        return FileResponse(HERE / "static" / "status.js", media_type="text/javascript")

    @router.get(f"{PREFIX}/overview", summary="Data centres, targets, error budget and the last drills")
    def overview_route(_: Viewer) -> dict[str, Any]:
        try:
            status = operator.read_status(ctx.coord, ctx.topology).document()
        except OrchestratorError as exc:
            raise HTTPException(503, str(exc)) from None
        return {**overview(ctx.topology, status, _runs(ctx), time.time()), "served_by": ctx.served_by}

    return router
