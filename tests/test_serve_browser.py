"""The page of `top-import serve` in a real headless Chromium (Debian's, driven by Playwright;
never `playwright install`): choose a file and see its invalid rows, send it, watch it end,
download the workbook, choose a sheet of a workbook fed back, stop a slow run midway, and read
it all in Chinese. The server is the real command, started here on a free loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_sheet, ticket, write_csv

CHROMIUM = "/usr/bin/chromium"
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FAILED_SHEET_CHECKED = """() => {
  const shown = [...document.querySelectorAll('#counts li')].map((li) => li.dataset.status);
  return shown.includes('invalid') && !shown.includes('valid');
}"""
WAIT_MS = 60_000  # a ceiling: each wait ends as soon as the page shows what it waits for

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason="no browser: apt-get install -y chromium fonts-noto-cjk (.ci/run does)",
)


class ServeProcess:
    """``top-import serve --port 0`` in a process of its own; ``url`` is the address it printed."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "importer", "serve", "--port", "0", *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.proc.stderr.read()

    def stop(self) -> str:
        self.proc.terminate()
        _out, err = self.proc.communicate(timeout=60)
        return err


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True, locale="en-US")
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    yield opened
    context.close()


def _open(page, url: str) -> None:
    """Go to ``url`` and wait until the page's script listens to every control."""
    page.goto(url)
    _ready(page)


def _ready(page) -> None:
    page.wait_for_selector("body[data-ready]", state="attached")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOP_")}
    return {**env, **extra}


def _statuses(page) -> dict[str, int]:
    pairs = page.locator("#run-counts li").all_inner_texts()
    return {status: int(n) for status, n in (pair.split(": ") for pair in pairs)}


def test_choose_check_send_watch_download_and_feed_back(page, tmp_path):
    server = ServeProcess(tmp_path, _env())
    try:
        _open(page, server.url)
        assert "token" not in page.url  # it went into a cookie
        assert page.locator("#gateway").is_disabled()  # no app key on the server
        page.set_input_files("#file", str(SAMPLES / "with_errors.xlsx"))
        page.wait_for_selector("#counts li[data-status=invalid]")
        counts = page.locator("#counts").inner_text()
        assert "invalid: 7" in counts and "valid: 6" in counts and "duplicate: 1" in counts
        problems = page.locator("#problems tr")
        assert problems.count() == 1 + 8
        assert "user_identify is required but empty" in page.locator("#problems").inner_text()
        header = page.locator("#problems tr").first.locator("th").all_inner_texts()
        assert header == ["Row", "Status", "Field", "Value", "Reason"]
        row_4 = page.locator("#problems tr", has_text="'abc'").locator("td").all_inner_texts()
        assert row_4[:4] == ["4", "invalid", "tenant_id", "abc"]  # each in a column of its own
        with page.expect_download() as checked:
            page.click("#validate-book")
        assert checked.value.suggested_filename == "with_errors.validate.xlsx"

        asked: list[str] = []

        def confirm(dialog) -> None:  # the plan, put to the person before any call
            asked.append(dialog.message)
            dialog.accept()

        page.once("dialog", confirm)
        page.click("#send")
        page.wait_for_selector("#result-book:not([hidden])")
        assert page.locator("#watch-title").inner_text().startswith("Finished")
        assert "6 rows to send" in asked[0] and "The simulator" in asked[0]
        assert _statuses(page) == {"invalid": 7, "duplicate": 1, "success": 6}
        with page.expect_download() as result:
            page.click("#result-book")
        assert result.value.suggested_filename == "with_errors.result.xlsx"
        book = tmp_path / "with_errors.result.xlsx"
        result.value.save_as(book)
        statuses = [row["status"] for row in read_sheet(book)]
        assert statuses.count("success") == 6 and statuses.count("invalid") == 7

        # the workbook fed back: its sheets to choose from, the failed one checked
        page.set_input_files("#file", str(book))
        page.wait_for_selector("#sheet-box:not([hidden])")
        options = page.locator("#sheet option").all_inner_texts()
        assert "failed" in options and "results" in options
        page.select_option("#sheet", "failed")
        # the failed sheet's check: its rows, none of them valid (the results sheet has 6)
        page.wait_for_function(FAILED_SHEET_CHECKED)
        assert page.locator("#history tr").count() == 2  # the run, listed
    finally:
        err = server.stop()
    assert "Traceback" not in err
    # serve started again: the run is in the history, its workbook still to download
    again = ServeProcess(tmp_path, _env())
    try:
        _open(page, again.url)
        page.wait_for_selector("#history a")
        listed = page.locator("#history tr").nth(1).inner_text()
        assert "with_errors.xlsx" in listed and "success 6" in listed
        with page.expect_download() as kept:
            page.click("#history a")
        assert kept.value.suggested_filename == "with_errors.result.xlsx"
    finally:
        err = again.stop()
    assert "Traceback" not in err


def test_a_slow_run_is_stopped_midway_from_the_page(page, tmp_path, simulator):
    sim = simulator(latency_ms=200)
    write_csv(tmp_path / "t.csv", [ticket(i) for i in range(60)])
    gateway = {k: v for k, v in sim.env().items() if k.startswith("TOP_")}
    server = ServeProcess(tmp_path, _env(**gateway))
    try:
        _open(page, server.url)
        assert sim.settings.app_key in page.locator("#gateway-text").inner_text()
        page.set_input_files("#file", str(tmp_path / "t.csv"))
        page.wait_for_selector("#counts li[data-status=valid]")
        page.check("#gateway")
        page.fill("#qps", "5")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#send")
        page.wait_for_selector("#run-counts li[data-status=success]")
        page.click("#stop")
        page.wait_for_selector("#result-book:not([hidden])")
        counts = _statuses(page)
        assert counts["not_sent"] > 0 and counts["success"] == sim.stats()["accepted"]
        assert counts["success"] + counts["not_sent"] == 60
        assert "exit code 1" in page.locator("#run-message").inner_text()
        assert "not sent" in page.locator("#failures").inner_text()  # why, beside each row
    finally:
        err = server.stop()
    assert "Traceback" not in err


def test_the_page_in_chinese(browser, tmp_path):
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    server = ServeProcess(tmp_path, _env())
    try:
        _open(page, server.url)
        assert page.locator("#title").inner_text() == "top-import：发送表格"
        assert "拖到这里" in page.locator("#drop-text").inner_text()
        with page.expect_navigation():
            page.click("#language")  # the switch: English, and it stays so
        _ready(page)
        assert page.locator("#title").inner_text() == "top-import: send a spreadsheet"
        page.reload()
        _ready(page)
        assert page.locator("#title").inner_text() == "top-import: send a spreadsheet"
        with page.expect_navigation():
            page.click("#language")
        _ready(page)
        assert page.locator("html").get_attribute("lang") == "zh"
        page.set_input_files("#file", str(SAMPLES / "with_errors.xlsx"))
        page.wait_for_selector("#counts li[data-status=invalid]")
        invalid = page.locator("#counts li[data-status=invalid]").inner_text()
        assert invalid == "无效 (invalid): 7"  # as the workbook's dashboard shows it
        reasons = page.locator("#problems").inner_text()
        assert "必填" in reasons or "为空" in reasons  # the reasons in Chinese too
    finally:
        context.close()
        server.stop()
