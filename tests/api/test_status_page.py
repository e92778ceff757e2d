"""The status page end to end in headless Chromium (Debian's, driven by Playwright) on the operator lab.

An operator signs in with a token, sees the primary, switches over with the page's button
and watches the roles change; opens a drill report; a viewer's switchover is refused with
403 on the page and changes nothing. A screenshot is saved (its path is printed).
The report shown is written by the drills' own report writer into the directory the
controllers serve (``reports/`` beside ``drills/``) and removed afterwards.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from orchestrator.api.auth import Role
from orchestrator.api.overview import error_budget
from orchestrator.drills.report import write_report
from tests.api.conftest import OperatorLab
from tests.conftest import REPO
from tests.drills.test_report import make_report

CLUSTER = "payments"
# Bounds, not targets: on a starved machine (load 40 on 2 cores) one poll of the page took over 15 s.
expect.set_options(timeout=60_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def report_run(operator_lab: OperatorLab) -> Iterator[str]:
    report = make_report(operator_lab.lab.topology, started_at=time.time())
    run_dir = write_report(report, REPO / "reports")
    try:
        yield run_dir.name
    finally:
        shutil.rmtree(run_dir)


def _sign_in(browser: Browser, url: str, token: str) -> Page:
    page = browser.new_context(ignore_https_errors=True).new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{url}/status")
    page.fill("#token", token)
    page.click("#login button[type=submit]")
    return page


@pytest.mark.lab
def test_a_viewer_sees_the_page_but_its_switchover_is_refused_with_403(operator_lab: OperatorLab,
                                                                       browser: Browser) -> None:
    api = operator_lab.api
    page = _sign_in(browser, api.url("dc1"), api.tokens[Role.VIEWER])
    expect(page.locator("button[data-switchover]").first).to_be_visible(timeout=60_000)
    primary = page.locator(f"#primary-{CLUSTER}").inner_text()
    page.locator("button[data-switchover]").first.click()
    expect(page.locator("#message")).to_contain_text("switchover refused (403)")
    expect(page.locator("#message")).to_contain_text("needs operator")
    page.context.close()
    assert api.call("dc1", "GET", f"/api/v1/clusters/{CLUSTER}/members")[1]["primary"] == primary


@pytest.mark.lab
def test_operator_switches_over_from_the_page_and_opens_a_drill_report(
        operator_lab: OperatorLab, browser: Browser, report_run: str, tmp_path: Path) -> None:
    lab, api = operator_lab.lab, operator_lab.api
    document = api.call("dc3", "GET", f"/api/v1/clusters/{CLUSTER}/members")[1]
    primary = str(document["primary"])
    sync = lab.topology.synchronous_members(lab.topology.cluster(CLUSTER))

    page = _sign_in(browser, api.url("dc2"), api.tokens[Role.OPERATOR])
    expect(page.locator("#whoami")).to_contain_text("test-operator (operator)")
    expect(page.locator(f"#primary-{CLUSTER}")).to_have_text(primary)
    expect(page.locator("#leader")).to_have_text(str(document["leader"]))
    # A synchronous standby that is healthy (the page offers a switchover only to those, and only
    # while no operation runs; after the previous test's failover the old primary may still rejoin).
    buttons = page.locator(", ".join(f"button[data-switchover='{m}']" for m in sync if m != primary))
    expect(buttons.first).to_be_visible(timeout=60_000)
    target = str(buttons.first.get_attribute("data-switchover"))
    expect(page.locator(f"tr[data-member='{primary}'] td.role")).to_have_text("primary")
    expect(page.locator("tr[data-dc='dc3']")).to_contain_text("dc3-a (standby)")
    expect(page.locator(f"section[data-cluster='{CLUSTER}'] .budget")).to_contain_text("availability 99.99 %")

    page.click(f"button[data-switchover='{target}']")
    expect(page.locator(f"#primary-{CLUSTER}")).to_have_text(target, timeout=90_000)
    expect(page.locator(f"tr[data-member='{target}'] td.role")).to_have_text("primary")
    expect(page.locator(f"tr[data-member='{primary}'] td.role")).not_to_have_text("primary")
    expect(page.locator("#message")).to_contain_text(f"primary is now {target}")

    row = page.locator(f"tr[data-run='{report_run}']")
    expect(row).to_contain_text("passed")
    expect(row).to_contain_text("(5 s)")   # the RTO target of the shipped topology, beside the measured RTO
    row.locator("a", has_text="report").click()
    frame = page.frame_locator("#report-frame")
    expect(frame.locator("body")).to_contain_text("PASSED. When the primary")
    shot = tmp_path / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")
    page.context.close()
    assert api.call("dc1", "GET", f"/api/v1/clusters/{CLUSTER}/members")[1]["primary"] == target


@pytest.mark.lab
def test_a_wrong_token_is_refused_on_the_page(operator_lab: OperatorLab, browser: Browser) -> None:
    page = _sign_in(browser, operator_lab.api.url("dc1"), "drctl_not-a-token")
    expect(page.locator("#message")).to_contain_text("sign-in failed (401)")
    expect(page.locator("#content")).to_be_hidden()
    page.context.close()


@pytest.mark.parametrize(("history", "used"), [
    ([], 0.0),
    ([{"kind": "failover", "started_at": 1000.0, "duration_s": 2.5},
      {"kind": "switchover", "started_at": 2000.0, "duration_s": 1.0}], 3.5),
    ([{"kind": "failover", "started_at": 1000.0 - 366 * 86400, "duration_s": 9.0}], 0.0),   # older than a year
    ([{"kind": "abort", "started_at": 1000.0, "duration_s": 4.0}], 0.0),
], ids=["none", "two", "old", "not-an-outage"])
def test_error_budget_counts_failovers_and_switchovers_of_the_last_year(history: list[dict[str, object]],
                                                                        used: float) -> None:
    budget = error_budget(99.99, history, 3000.0)
    assert budget["budget_s"] == pytest.approx(3153.6)
    assert budget["used_s"] == pytest.approx(used)
    assert budget["remaining_s"] == pytest.approx(3153.6 - used)
