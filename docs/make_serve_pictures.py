"""Regenerates the README's pictures of the ``top-import serve`` page from the real page.

    apt-get install chromium fonts-noto-cjk && pip install playwright
    python docs/make_serve_pictures.py

Starts ``top-import serve --port 0`` (no credentials: the simulator only) in a scratch folder,
opens its address in Debian's headless Chromium through Playwright (never ``playwright
install``), chooses ``samples/with_errors.xlsx`` and photographs the page checked
(``docs/serve-check.png``), then sends it to the simulator and photographs it finished
(``docs/serve-done.png``); the same check in Chinese goes to ``docs/zh-serve-check.png``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "samples" / "with_errors.xlsx"
CHROMIUM = "/usr/bin/chromium"
VIEW = {"width": 1100, "height": 1000}  # a laptop's screen


def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOP_")}
    with tempfile.TemporaryDirectory() as scratch:
        server = subprocess.Popen(
            [sys.executable, "-m", "importer", "serve", "--port", "0"],
            cwd=scratch, env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        url = server.stdout.readline().strip()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                for lang, prefix in (("en-US", ""), ("zh-CN", "zh-")):
                    page = browser.new_page(locale=lang, viewport=VIEW)
                    page.goto(url)
                    page.wait_for_selector("body[data-ready]", state="attached")
                    page.set_input_files("#file", str(SAMPLE))
                    page.wait_for_selector("#counts li[data-status=invalid]")
                    page.screenshot(path=HERE / f"{prefix}serve-check.png", full_page=True)
                    if not prefix:
                        page.once("dialog", lambda dialog: dialog.accept())
                        page.click("#send")
                        page.wait_for_selector("#result-book:not([hidden])")
                        page.locator("#watch-step").scroll_into_view_if_needed()
                        page.screenshot(path=HERE / "serve-done.png", full_page=True)
                    page.close()
                browser.close()
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
