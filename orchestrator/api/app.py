"""The REST API's routes (FastAPI; OpenAPI at ``/docs``): reads answered here, actions handed to the leader.

Every controller serves the same routes. Reads come from ZooKeeper (the state the leader
keeps there) and the lab directory (drill reports, backups); actions go through the
ZooKeeper request queue (:mod:`orchestrator.operator`, the code ``drctl`` uses), so on a
follower they are forwarded to the leader, and the leader runs them with the checks of
``control/requests.py``. Each route needs a role (:mod:`orchestrator.api.auth`); a request
without a valid token gets 401, one with too small a role 403, an address past the
failed-login limit 429, and none of them reaches ZooKeeper. Every mutating request, every
failed login and every refusal is written to the audit trail (:mod:`orchestrator.audit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator import operator
from orchestrator.api.auth import AllowList, FailedLogins, Identity, Role, TokenFile, parse_role
from orchestrator.audit import AuditLog
from orchestrator.coordination import Coordinator
from orchestrator.errors import InvalidInput, OrchestratorError
from orchestrator.metrics import ControllerMetrics
from orchestrator.topology import Topology

PREFIX = "/api/v1"


@dataclass
class ApiContext:
    """What the routes use: the controller's ZooKeeper session, files, and security settings."""

    topology: Topology
    root: Path
    coord: Coordinator
    served_by: str
    audit: AuditLog
    tokens: TokenFile
    allow: AllowList
    limiter: FailedLogins
    drills_dir: Path | None
    emit: Callable[..., None]
    request_timeout: float = 60.0
    # /metrics (orchestrator.metrics); None: not served. metrics_token: it needs a viewer token.
    metrics: ControllerMetrics | None = None
    metrics_token: bool = False


# ---- request bodies ------------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SwitchoverBody(_Body):
    to: str = Field(description="The standby to promote.")
    timeout_s: float | None = Field(None, ge=1, le=3600, description="Seconds to wait for the leader.")


class FailoverBody(_Body):
    to: str = Field(description="The member to promote.")
    accept_data_loss: StrictBool = Field(False, description="Promote even when zero loss is not proven (admin).")
    timeout_s: float | None = Field(None, ge=1, le=3600, description="Seconds to wait for the leader.")


class AbortBody(_Body):
    reason: str = Field("", max_length=500, description="Why, for the history and the event log.")
    timeout_s: float | None = Field(None, ge=1, le=3600, description="Seconds to wait for the leader.")


class DrillBody(_Body):
    timeout_s: float | None = Field(None, ge=1, le=3600, description="Seconds to wait for the leader.")


class TokenBody(_Body):
    name: str = Field(description="Who the token is for.")
    role: Role = Field(description="viewer, operator or admin.")


HINTS = {
    "to": 'a member name, e.g. {"to": "dc2-a"}',
    "accept_data_loss": "true or false",
    "reason": "a text of at most 500 characters",
    "timeout_s": "a number of seconds from 1 to 3600",
    "name": 'a name, e.g. {"name": "alice", "role": "operator"}',
    "role": "viewer, operator or admin",
}


def validation_line(exc: RequestValidationError) -> str:
    """The first problem in one line: the field and the fix."""
    errors = exc.errors()
    if not errors:
        return "body: malformed request; send a JSON object"
    err = errors[0]
    loc = [str(part) for part in err.get("loc", ()) if part != "body"]
    kind = str(err.get("type", ""))
    if kind == "json_invalid":
        return "body: not valid JSON; send a JSON object, e.g. {\"to\": \"dc2-a\"}"
    field = ".".join(p for p in loc if not p.isdigit()) or "body"
    hint = HINTS.get(loc[-1] if loc else "", "a JSON object with the fields listed at /docs")
    if kind == "missing":
        return f"{field}: required; give {hint}"
    if kind == "extra_forbidden":
        return f"{field}: unknown field; remove it (the fields are listed at /docs)"
    if kind in ("model_attributes_type", "dict_type"):
        return f"{field}: expected a JSON object; send e.g. {{\"to\": \"dc2-a\"}}"
    return f"{field}: {err.get('msg', 'invalid')}; give {hint}"


# ---- roles, as route parameters (module level: FastAPI resolves the annotations here) --------------

def _role(needed: Role) -> Any:
    def dependency(request: Request) -> Identity:
        authorize: Callable[[Request, Role], Identity] = request.app.state.authorize
        return authorize(request, needed)
    return Depends(dependency)


Viewer = Annotated[Identity, _role(Role.VIEWER)]
Operator = Annotated[Identity, _role(Role.OPERATOR)]
Admin = Annotated[Identity, _role(Role.ADMIN)]


# ---- the application -----------------------------------------------------------------------------

def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="dr-orchestrator", version="1",
                  description="Operator API of the dr-orchestrator controllers: reads are answered by any "
                              "controller, actions are run by the elected leader. Send `Authorization: Bearer "
                              "<token>` (drctl api token add).")

    def source(request: Request) -> str:
        return request.client.host if request.client is not None else "unknown"

    def audit(http: Request, who: str, action: str, outcome: str, **details: Any) -> None:
        ctx.audit.append(who=who, action=action, outcome=outcome, source=source(http),
                         via=f"api {http.method} {http.url.path}", served_by=ctx.served_by, **details)

    def deny(request: Request, status: int, error: str, *, who: str = "unknown", action: str,
             headers: dict[str, str] | None = None) -> HTTPException:
        audit(request, who, action, "denied", status=status, error=error)
        return HTTPException(status, error, headers=headers)

    def authorize(request: Request, needed: Role) -> Identity:
        address = source(request)
        if not ctx.allow.allows(address):
            raise deny(request, 403, f"source address {address} is not in api.allow", action="connect")
        if ctx.limiter.blocked(address):
            ctx.emit("api-login-blocked", source=address)
            raise HTTPException(429, f"too many failed logins from {address}; retry later",
                                headers={"Retry-After": str(ctx.limiter.retry_after(address))})
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        identity = ctx.tokens.identify(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if identity is None:
            why = "missing bearer token" if not header else "unknown or malformed bearer token"
            audit(request, "unknown", "login", "failed", error=why)
            if ctx.limiter.record(address):
                audit(request, "unknown", "login-rate-limited", "blocked",
                      failures=ctx.limiter.limit, window_s=ctx.limiter.window)
                ctx.emit("api-login-rate-limited", source=address, failures=ctx.limiter.limit)
            raise HTTPException(401, f"{why}; send 'Authorization: Bearer <token>' (drctl api token add)",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.identity = identity
        if not identity.role.allows(needed):
            raise deny(request, 403, f"{identity.name} has role {identity.role.value}; this needs {needed.value}",
                       who=str(identity), action=f"{request.method} {request.url.path}")
        return identity

    app.state.authorize = authorize
    from orchestrator.api.status_page import status_router  # the status page (HTML + /api/v1/overview)

    app.include_router(status_router(ctx))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        line = validation_line(exc)
        identity = getattr(request.state, "identity", None)
        if request.method != "GET" and identity is not None:
            audit(request, str(identity), f"{request.method} {request.url.path}", "invalid", error=line)
        return JSONResponse({"error": line}, status_code=422)

    def cluster_of(name: str) -> str:
        try:
            return operator.cluster_name(ctx.topology, name)
        except InvalidInput as exc:
            raise HTTPException(404, str(exc)) from None

    def act(request: Request, identity: Identity, cluster: str, body: dict[str, Any]) -> dict[str, Any]:
        """Hand one request to the leader through ZooKeeper; audit it with its outcome."""
        kind = str(body["kind"])
        timeout = float(body.pop("timeout_s", None) or ctx.request_timeout)
        details = {k: v for k, v in body.items() if k != "kind"}
        try:
            result = operator.run_request(ctx.coord, ctx.topology, cluster, body, timeout, to_field="to")
        except InvalidInput as exc:
            audit(request, str(identity), kind, "invalid", cluster=cluster, request=details, error=str(exc))
            raise HTTPException(422, str(exc)) from None
        except operator.RequestRefused as exc:
            audit(request, str(identity), kind, "refused", cluster=cluster, request=details, error=str(exc))
            raise HTTPException(409, str(exc)) from None
        except OrchestratorError as exc:
            audit(request, str(identity), kind, "error", cluster=cluster, request=details, error=str(exc))
            raise HTTPException(503, str(exc)) from None
        audit(request, str(identity), kind, "ok", cluster=cluster, request=details, result=result)
        return {**result, "served_by": ctx.served_by}

    def read(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except InvalidInput as exc:
            raise HTTPException(404, str(exc)) from None
        except OrchestratorError as exc:
            raise HTTPException(503, str(exc)) from None

    # ---- reads -----------------------------------------------------------------------------------

    @app.get(f"{PREFIX}/whoami", summary="The caller's token name and role")
    def whoami(identity: Viewer) -> dict[str, Any]:
        return {"name": identity.name, "role": identity.role.value, "served_by": ctx.served_by}

    @app.get(f"{PREFIX}/topology", summary="The topology this controller runs")
    def topology(_: Viewer) -> dict[str, Any]:
        return ctx.topology.model_dump(mode="json")

    @app.get(f"{PREFIX}/status", summary="Cluster status (the document of drctl status --json)")
    def status(_: Viewer, cluster: Annotated[str | None, Query(description="One cluster (default: all).")] = None
               ) -> dict[str, Any]:
        if cluster is not None:
            cluster_of(cluster)
        document: dict[str, Any] = read(lambda: operator.read_status(ctx.coord, ctx.topology, cluster).document())
        return {**document, "served_by": ctx.served_by}

    @app.get(f"{PREFIX}/clusters/{{cluster}}/members", summary="Members with role, timeline, lag and health")
    def members(_: Viewer, cluster: str) -> dict[str, Any]:
        name = cluster_of(cluster)
        document = read(lambda: operator.read_status(ctx.coord, ctx.topology, name).document())
        state = document["clusters"][0]
        return {"cluster": name, "primary": state["primary"], "leader": document["leader"],
                "members": state["members"], "served_by": ctx.served_by}

    # ---- metrics (Prometheus) --------------------------------------------------------------------

    @app.get("/metrics", summary="Prometheus metrics (no token unless api.metrics_token)", response_class=Response)
    def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if ctx.metrics is None:
            raise HTTPException(404, "this controller serves no metrics")
        if ctx.metrics_token:
            authorize(request, Role.VIEWER)
        elif not ctx.allow.allows(source(request)):
            raise deny(request, 403, f"source address {source(request)} is not in api.allow", action="connect")
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- actions (run by the leader) -------------------------------------------------------------

    @app.post(f"{PREFIX}/clusters/{{cluster}}/switchover", summary="Planned switchover to a standby (operator)")
    def switchover(request: Request, identity: Operator, cluster: str, body: SwitchoverBody) -> dict[str, Any]:
        return act(request, identity, cluster_of(cluster),
                   {"kind": "switchover", "to": body.to, "timeout_s": body.timeout_s})

    @app.post(f"{PREFIX}/clusters/{{cluster}}/failover",
              summary="Operator failover (operator; admin with accept_data_loss)")
    def failover(request: Request, identity: Operator, cluster: str, body: FailoverBody) -> dict[str, Any]:
        name = cluster_of(cluster)
        if body.accept_data_loss and not identity.role.allows(Role.ADMIN):
            raise deny(request, 403, f"{identity.name} has role {identity.role.value}; accept_data_loss needs admin",
                       who=str(identity), action="failover")
        return act(request, identity, name, {"kind": "failover", "to": body.to,
                                             "accept_data_loss": body.accept_data_loss, "timeout_s": body.timeout_s})

    @app.post(f"{PREFIX}/clusters/{{cluster}}/abort", summary="End a stuck operation before promotion (operator)")
    def abort(request: Request, identity: Operator, cluster: str, body: AbortBody | None = None) -> dict[str, Any]:
        body = body or AbortBody()
        return act(request, identity, cluster_of(cluster),
                   {"kind": "abort", "by": f"{identity.name}@{source(request)} (api)", "reason": body.reason,
                    "timeout_s": body.timeout_s})

    def pause_or_resume(request: Request, identity: Identity, cluster: str, paused: bool) -> dict[str, Any]:
        name = cluster_of(cluster)
        action = "pause" if paused else "resume"
        try:
            operator.set_paused(ctx.coord, ctx.topology, name, paused)
        except OrchestratorError as exc:
            audit(request, str(identity), action, "error", cluster=name, error=str(exc))
            raise HTTPException(503, str(exc)) from None
        audit(request, str(identity), action, "ok", cluster=name)
        return {"ok": True, "cluster": name, "paused": paused, "served_by": ctx.served_by}

    @app.post(f"{PREFIX}/clusters/{{cluster}}/pause", summary="Maintenance: no automatic failover (operator)")
    def pause(request: Request, identity: Operator, cluster: str) -> dict[str, Any]:
        return pause_or_resume(request, identity, cluster, True)

    @app.post(f"{PREFIX}/clusters/{{cluster}}/resume", summary="End maintenance (operator)")
    def resume(request: Request, identity: Operator, cluster: str) -> dict[str, Any]:
        return pause_or_resume(request, identity, cluster, False)

    # ---- drills ----------------------------------------------------------------------------------

    def drills_dir() -> Path:
        if ctx.drills_dir is None:
            raise HTTPException(404, "this controller has no drills directory; start it from the repository")
        return ctx.drills_dir

    @app.get(f"{PREFIX}/drills", summary="The drill files, validated against the topology")
    def drills(_: Viewer) -> list[dict[str, Any]]:
        from orchestrator.drills.spec import list_drills, load_drill

        out: list[dict[str, Any]] = []
        for path in list_drills(drills_dir()):
            try:
                spec = load_drill(path, ctx.topology)
            except InvalidInput as exc:
                out.append({"drill": path.stem, "error": str(exc)})
                continue
            out.append({"drill": spec.name, "cluster": spec.cluster, "fault": str(spec.fault.kind),
                        "schedule": spec.schedule, "description": spec.description})
        return out

    @app.post(f"{PREFIX}/drills/{{name}}/runs", summary="Start a drill: the leader runs it as a child process "
                                                        "(operator)")
    def start_drill(request: Request, identity: Operator, name: str, body: DrillBody | None = None
                    ) -> dict[str, Any]:
        from orchestrator.drills.spec import list_drills, load_drill

        paths = {p.stem: p for p in list_drills(drills_dir())}
        if name not in paths:
            known = ", ".join(sorted(paths)) or "none"
            raise HTTPException(404, f"name: no drill {name!r}; drills are {known}")
        try:
            spec = load_drill(paths[name], ctx.topology)
        except InvalidInput as exc:
            raise HTTPException(422, str(exc)) from None
        return act(request, identity, spec.cluster,
                   {"kind": "drill", "drill": name, "timeout_s": body.timeout_s if body else None})

    @app.get(f"{PREFIX}/runs", summary="Past drill runs, newest first")
    def runs(_: Viewer) -> list[dict[str, Any]]:
        return operator.drill_runs(operator.reports_dir(drills_dir()))

    @app.get(f"{PREFIX}/runs/{{run}}", summary="One run's report (id, unique prefix, drill name or 'latest')")
    def run_report(_: Viewer, run: str) -> dict[str, Any]:
        result: dict[str, Any] = read(lambda: operator.drill_report(operator.reports_dir(drills_dir()), run))
        return result

    @app.get(f"{PREFIX}/runs/{{run}}/report.html", summary="One run's HTML report", response_class=FileResponse)
    def run_html(_: Viewer, run: str) -> FileResponse:
        from orchestrator.drills.report import find_run

        path = read(lambda: find_run(operator.reports_dir(drills_dir()), run)) / "report.html"
        if not path.is_file():
            raise HTTPException(404, f"run: {run} has no report.html")
        return FileResponse(path, media_type="text/html")

    # ---- backups ---------------------------------------------------------------------------------

    @app.get(f"{PREFIX}/clusters/{{cluster}}/backups", summary="Backups and their verified restores")
    def backups(_: Viewer, cluster: str) -> list[dict[str, Any]]:
        name = cluster_of(cluster)
        if ctx.topology.cluster(name).backup is None:
            raise HTTPException(404, f"clusters.{name}.backup: this cluster has no backup section")
        from orchestrator.backup.service import BackupService
        from orchestrator.lab import load_credentials

        def listing() -> list[dict[str, Any]]:
            service = BackupService(ctx.topology, name, ctx.root, load_credentials(ctx.root))
            return [{"label": r.backup.label, "type": r.backup.kind, "started": r.backup.started,
                     "stopped": r.backup.stopped, "size": r.backup.size, "stored": r.backup.stored,
                     "wal_start": r.backup.wal_start, "wal_stop": r.backup.wal_stop, "verified": r.verified}
                    for r in service.listing()]
        result: list[dict[str, Any]] = read(listing)
        return result

    # ---- tokens (admin) --------------------------------------------------------------------------

    @app.get(f"{PREFIX}/tokens", summary="Token names and roles (admin)")
    def tokens(_: Admin) -> list[dict[str, Any]]:
        return ctx.tokens.listing()

    @app.post(f"{PREFIX}/tokens", summary="Add a token; the response holds it, once (admin)")
    def add_token(request: Request, identity: Admin, body: TokenBody) -> dict[str, Any]:
        try:
            token = ctx.tokens.add(body.name, parse_role(body.role.value, field="role"))
        except InvalidInput as exc:
            audit(request, str(identity), "token-add", "invalid", name=body.name, error=str(exc))
            raise HTTPException(422, str(exc).replace("--name", "name")) from None
        audit(request, str(identity), "token-add", "ok", name=body.name, role=body.role.value)
        return {"name": body.name, "role": body.role.value, "token": token}

    @app.delete(f"{PREFIX}/tokens/{{name}}", summary="Remove a token (admin)")
    def remove_token(request: Request, identity: Admin, name: str) -> dict[str, Any]:
        try:
            ctx.tokens.remove(name)
        except InvalidInput as exc:
            audit(request, str(identity), "token-remove", "invalid", name=name, error=str(exc))
            raise HTTPException(404, str(exc).replace("--name", "name")) from None
        audit(request, str(identity), "token-remove", "ok", name=name)
        return {"ok": True, "name": name}

    return app
