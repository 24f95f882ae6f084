"""The web monitor in a real headless Chromium (Debian's), driven by Playwright (issue 4).

Each test reads what a person sees: rows with data-run-id, events with data-event-id, the
status badge and the connection indicator, and compares the rendered ids with events.jsonl.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .conftest import Daemon, assert_dense, read_log

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# How long the page may take to show something a run produces (a bound on a poll).
SHOW_TIMEOUT_MS = 30_000
RUN_STREAM_RE = re.compile(r"/api/runs/[^/]+/events$")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), (
        "make test installs Debian's chromium (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(SHOW_TIMEOUT_MS)
    expect.set_options(timeout=SHOW_TIMEOUT_MS)
    try:
        yield page
    finally:
        context.close()


def rendered_ids(page: Page) -> list[int]:
    """The data-event-id of every rendered event, in document order."""
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        "#events [data-event-id]", "nodes => nodes.map(n => Number(n.dataset.eventId))"
    )


def wait_rendered(page: Page, count: int) -> None:
    page.wait_for_function(
        f"document.querySelectorAll('#events [data-event-id]').length >= {count}"
    )


def log_ids(run: dict) -> list[int]:
    events = read_log(run["eventsLogPath"])
    assert_dense(events)
    return [e["id"] for e in events]


def test_the_page_and_its_assets_are_served_behind_the_host_guard(shared: Daemon) -> None:
    """`/`, `/runs/{id}` and `/static/*` are served; a foreign Host is still refused."""
    with shared.client() as http:
        for path in ("/", "/runs/run-0123456789abcdef"):
            page = http.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert '<script src="/static/app.js"' in page.text
        for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            response = http.get(f"/static/{asset}")
            assert response.status_code == 200 and kind in response.headers["content-type"]
        for path in ("/", "/static/app.js"):
            refused = http.get(path, headers={"Host": "evil.example"})
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "FORBIDDEN_HOST"


def test_a_run_started_from_the_form_shows_its_events_and_final_status(
    shared: Daemon, page: Page
) -> None:
    """Check 1 and 7: start a demo run from the form; its events, tool call, final answer and
    final status appear; every event once, as logged. Saves test-artifacts/run-view.png."""
    page.goto(f"{shared.url}/")
    expect(page.locator("#conn")).to_have_text("live")
    form = page.locator("#start-form")
    form.locator("[name=agentId]").select_option("demo")
    form.locator("[name=prompt]").fill("tidy the README")
    form.locator("[name=projectId]").fill("web-form")
    form.locator("[name=conversationId]").fill("conv-1")
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/runs/run-[0-9a-f]{16}$"))
    run_id = page.url.rsplit("/", 1)[1]

    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#conn")).to_have_text("stream ended")
    with shared.client() as http:
        run = http.get(f"/api/runs/{run_id}").json()
    assert run["projectId"] == "web-form" and run["conversationId"] == "conv-1"
    assert rendered_ids(page) == log_ids(run)

    meta = page.locator("#run-meta")
    expect(meta.locator('[data-field="agentId"]')).to_have_text("demo")
    expect(meta.locator('[data-field="projectId"]')).to_have_text("web-form")
    expect(meta.locator('[data-field="conversationId"]')).to_have_text("conv-1")
    expect(meta.locator('[data-field="exitCode"]')).to_have_text("0")
    expect(meta.locator('[data-field="eventsLogPath"]')).to_have_text(run["eventsLogPath"])
    # No database, no worker: the field is left out rather than shown empty.
    expect(meta.locator('div:has(> [data-field="workerId"])')).to_be_hidden()
    expect(page.locator("#cancel")).to_be_disabled()
    # Deltas are joined into one readable message; the tool call is a collapsible block.
    expect(page.locator(".msg.assistant").first).to_contain_text(
        "I'll start by looking at the project layout"
    )
    tool = page.locator("details.tool")
    expect(tool).to_have_count(1)
    expect(tool.locator("summary")).to_contain_text("shell")
    expect(tool.locator(".tool-state")).to_have_text("exit 0")
    tool.locator("summary").click()
    expect(tool.locator(".tool-output")).to_contain_text("pyproject.toml")
    expect(page.locator(".final .text")).to_contain_text("Done.")
    expect(page.locator(".end")).to_contain_text("Run succeeded")
    assert page.locator("#events > *").last.get_attribute("data-event") == "end"

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run-view.png"), full_page=True)
    assert (ARTIFACTS / "run-view.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_daemon_restart_mid_run_shows_reconnecting_then_every_event_once(
    data_dir: Path, page: Page
) -> None:
    """Check 2: SIGTERM the daemon while the page follows a run, start another on the same
    data dir and port; the page shows reconnecting, then the run's log exactly (the graceful
    stop canceled the run, so its log ends in `end` canceled, which only the second daemon
    can serve)."""
    first = Daemon(data_dir).start()
    second: Daemon | None = None
    try:
        run = first.create({"prompt": "restart", "demo": {"events": 400, "durationSeconds": 40}})
        page.goto(f"{first.url}/runs/{run['id']}")
        expect(page.locator("#conn")).to_have_text("live")
        wait_rendered(page, 10)
        first.stop()
        expect(page.locator("#conn")).to_have_text("reconnecting…")
        before = rendered_ids(page)

        second = Daemon(data_dir, first.port).start()
        expect(page.locator("#run-status")).to_have_text("canceled")
        expect(page.locator("#conn")).to_have_text("stream ended")
        logged = log_ids(run)
        assert rendered_ids(page) == logged
        assert logged[: len(before)] == before and len(logged) > len(before)
        assert read_log(run["eventsLogPath"])[-1]["data"]["status"] == "canceled"
    finally:
        for daemon in (first, second):
            if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()


def test_reloading_mid_run_resumes_after_the_last_rendered_event(
    shared: Daemon, page: Page
) -> None:
    """Check 3: a reload renders what this tab already had and asks the stream only for
    events after the last rendered id; nothing is shown twice."""
    run = shared.create({"prompt": "reload", "demo": {"events": 150, "durationSeconds": 6}})
    page.goto(f"{shared.url}/runs/{run['id']}")
    wait_rendered(page, 20)
    before = rendered_ids(page)

    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url))
    page.reload()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#conn")).to_have_text("stream ended")

    after_reload = rendered_ids(page)
    assert after_reload == log_ids(run)
    assert after_reload[: len(before)] == before
    resumed = [urlsplit(url) for url in streams if RUN_STREAM_RE.search(urlsplit(url).path)]
    assert resumed, "the reloaded page opened no event stream"
    cursor = int(parse_qs(resumed[0].query)["after"][0])
    assert before[-1] <= cursor < after_reload[-1]
    assert not any("format=json" in url for url in streams), "events were fetched again"


@pytest.mark.slow
def test_twenty_streaming_runs_keep_the_list_live_over_one_connection(
    daemon: Daemon, page: Page
) -> None:
    """Check 4: twenty runs stream at once; the list shows each appear and finish, live,
    newest first, over one /api/events connection and no per-run stream."""
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{daemon.url}/")
    expect(page.locator("#conn")).to_have_text("live")

    runs = [
        daemon.create(
            {
                "projectId": "twenty",
                "prompt": f"run {i}",
                "demo": {"events": 60, "durationSeconds": 5},
            }
        )
        for i in range(20)
    ]
    rows = page.locator("#runs tr[data-run-id]")
    expect(rows).to_have_count(20)
    with daemon.client() as http:
        active = http.get("/api/runs", params={"status": "active"}).json()["runs"]
    assert len(active) >= 10, "the runs did not overlap: nothing was streaming at once"
    expect(page.locator('#runs tr[data-status="succeeded"]')).to_have_count(20)

    shown = page.eval_on_selector_all(
        "#runs tr[data-run-id]", "rows => rows.map(r => r.dataset.runId)"
    )
    assert shown == [run["id"] for run in reversed(runs)]
    for run in runs[:3]:
        link = page.locator(f'#runs tr[data-run-id="{run["id"]}"] a')
        expect(link).to_have_attribute("href", f"/runs/{run['id']}")
    paths = [urlsplit(url).path for url in requests]
    assert paths.count("/api/events") == 1
    assert not [p for p in paths if RUN_STREAM_RE.search(p)]

    # Filters: the status filter is applied to the live list, the project filter by the daemon.
    page.locator("#filters [name=status]").select_option("active")
    expect(rows).to_have_count(0)
    page.locator("#filters [name=status]").select_option("succeeded")
    expect(rows).to_have_count(20)
    page.locator("#filters [name=projectId]").fill("another")
    expect(rows).to_have_count(0)
    assert "projectId=another" in page.url


def test_with_a_token_the_page_works_once_opened_with_it(data_dir: Path, page: Page) -> None:
    """A daemon with a token: the page asks for it; opened once with ?token=, it keeps it
    for the session (not in the URL), and its fetches and streams are accepted."""
    daemon = Daemon(data_dir, None, token="web-T0ken").start()
    try:
        assert httpx.get(f"{daemon.url}/api/runs").status_code == 401
        page.goto(f"{daemon.url}/")
        expect(page.locator("#token-form")).to_be_visible()

        page.goto(f"{daemon.url}/?token=web-T0ken")
        expect(page.locator("#conn")).to_have_text("live")
        assert "token" not in page.url
        page.locator("#start-form [name=prompt]").fill("with a token")
        page.locator("#start-form button[type=submit]").click()
        page.wait_for_url(re.compile(r"/runs/run-[0-9a-f]{16}$"))
        expect(page.locator("#run-status")).to_have_text("succeeded")
        with daemon.client() as http:
            run = http.get(f"/api/runs/{page.url.rsplit('/', 1)[1]}").json()
        assert rendered_ids(page) == log_ids(run)
    finally:
        daemon.stop()


def test_the_cancel_button_cancels_a_running_run(shared: Daemon, page: Page) -> None:
    """Cancel on the run view: the run ends `canceled`, the page shows its end, as logged."""
    run = shared.create({"prompt": "cancel me", "demo": {"events": 400, "durationSeconds": 40}})
    page.goto(f"{shared.url}/runs/{run['id']}")
    wait_rendered(page, 5)
    expect(page.locator("#cancel")).to_be_enabled()
    page.locator("#cancel").click()
    expect(page.locator("#run-status")).to_have_text("canceled")
    expect(page.locator(".end")).to_contain_text("Run canceled")
    expect(page.locator("#cancel")).to_be_disabled()
    assert rendered_ids(page) == log_ids(run)


def test_a_deleted_run_leaves_the_list_without_a_reload(shared: Daemon, page: Page) -> None:
    """Issue 15: deleting a run (REST, CLI, prune) removes its row from an open list, live."""
    page.goto(f"{shared.url}/?projectId=web-delete")
    expect(page.locator("#conn")).to_have_text("live")
    run = shared.create({"projectId": "web-delete", "demo": {"events": 4, "fast": True}})
    row = page.locator(f'#runs tr[data-run-id="{run["id"]}"]')
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(page.locator(".runs-table th.worker-col")).to_be_hidden()  # no database, no workers
    with shared.client() as http:
        assert http.delete(f"/api/runs/{run['id']}").status_code == 200
    expect(row).to_have_count(0)
    expect(page.locator("#conn")).to_have_text("live")


def test_on_a_database_the_list_and_the_run_view_name_the_worker(
    data_dir: Path, pg_url: str, page: Page
) -> None:
    """Issue 11: a run on a daemon with a database shows its workerId in its row (the Worker
    column appears) and in the run view, with the host its log is on."""
    daemon = Daemon(data_dir, None, "--database-url", pg_url, "--worker-id", "w-web").start()
    try:
        page.goto(f"{daemon.url}/?projectId=web-worker")
        expect(page.locator("#conn")).to_have_text("live")
        run = daemon.create({"projectId": "web-worker", "demo": {"events": 4, "fast": True}})
        row = page.locator(f'#runs tr[data-run-id="{run["id"]}"]')
        expect(row).to_have_attribute("data-status", "succeeded")
        expect(page.locator(".runs-table th.worker-col")).to_be_visible()
        expect(row.locator("td.worker-col")).to_have_text("w-web")

        row.locator("a").click()
        expect(page.locator("#run-status")).to_have_text("succeeded")
        with daemon.client() as http:
            host = http.get(f"/api/runs/{run['id']}").json()["eventsLogHost"]
        worker = page.locator('#run-meta [data-field="workerId"]')
        expect(worker).to_be_visible()
        expect(worker).to_have_text(f"w-web · log on {host}" if host else "w-web")
    finally:
        daemon.stop()
