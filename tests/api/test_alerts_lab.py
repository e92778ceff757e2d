"""A real failover on the operator lab (+6700) raises exactly one webhook alert and one mail.

Every controller runs an alert dispatcher; only the leader's term emits ``failover-intent``,
so the three controllers together send one alert per receiver. The webhook's signature is
checked by the receiver with the secret the topology names by file.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from orchestrator import postgres as pg
from orchestrator.lab import Lab
from orchestrator.state import Role
from orchestrator.waiting import poll
from tests.api.conftest import OperatorLab

pytestmark = pytest.mark.lab

CLUSTER = "payments"


def _primary(lab: Lab) -> str | None:
    cluster = lab.topology.cluster(CLUSTER)
    prober = pg.Prober(lab.credentials, timeout=1)
    try:
        found = [m.name for m in cluster.members
                 if prober.probe(lab.layout(cluster, m).endpoint).role is Role.PRIMARY]
    finally:
        prober.close()
    return found[0] if len(found) == 1 else None


def _all_streaming(lab: Lab, primary: str) -> bool:
    cluster = lab.topology.cluster(CLUSTER)
    prober = pg.Prober(lab.credentials, timeout=1)
    try:
        return all(st.role is Role.STANDBY and st.streaming
                   for m in cluster.members if m.name != primary
                   for st in [prober.probe(lab.layout(cluster, m).endpoint)])
    finally:
        prober.close()


def _controller_events(lab: Lab, name: str) -> list[dict[str, object]]:
    out = []
    for log in sorted((lab.root / "controller").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"event": "{name}"' in line:
                out.append(json.loads(line))
    return out


def test_a_failover_raises_one_signed_webhook_alert_and_one_mail(operator_lab: OperatorLab) -> None:
    lab, hook, smtp = operator_lab.lab, operator_lab.hook, operator_lab.smtp
    assert poll(lambda: _primary(lab) is not None and _all_streaming(lab, _primary(lab) or ""), timeout=90,
                interval=0.2), "the cluster is not settled before the failover"
    old = _primary(lab)
    assert old is not None
    before_hook, before_mail = len(hook.received()), len(smtp.messages)
    cluster = lab.topology.cluster(CLUSTER)
    pid = lab.layout(cluster, cluster.member(old)).postmaster_pid()
    assert pid is not None
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    assert poll(lambda: len(hook.received()) > before_hook and len(smtp.messages) > before_mail, timeout=60,
                interval=0.05), "no alert arrived"
    # The barrier for duplicates: the failover is done and both deliveries are logged as sent.
    def settled() -> bool:
        done = [e for e in _controller_events(lab, "done") if e.get("kind") == "failover"
                and float(str(e["ts"])) >= killed_at]
        sent = [e for e in _controller_events(lab, "alert-sent") if float(str(e["ts"])) >= killed_at]
        return bool(done) and {e["receiver"] for e in sent} == {"ops-hook", "ops-mail"}
    assert poll(settled, timeout=60, interval=0.1), "the failover did not finish"
    alerts = hook.received()[before_hook:]
    mails = smtp.messages[before_mail:]
    assert len(alerts) == 1 and len(mails) == 1, (alerts, [m["Subject"] for m in mails])
    alert = alerts[0]
    assert alert.signed is True
    body = alert.json
    assert (body["kind"], body["cluster"], body["subject"], body["count"]) == ("failover", CLUSTER, old, 1)
    assert mails[0]["Subject"] == f"[drctl critical] failover: {CLUSTER} {old}"
    sent = [e for e in _controller_events(lab, "alert-sent") if float(str(e["ts"])) >= killed_at]
    assert {str(e["controller"]).split(":")[0] for e in sent} and len({e["controller"] for e in sent}) == 1
    print(f"alert latency from kill -9: webhook {alert.at - killed_at:.3f}s, "
          f"mail {smtp.times[before_mail] - killed_at:.3f}s")
