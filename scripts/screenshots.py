"""Regenerate the README screenshots from the running app: `python scripts/screenshots.py`.

Starts the app on the organism with a throw-away runs folder, drives it in Chromium (Playwright)
through Stage I, the playground, a short Stage II and an evaluation, and writes
assets/screenshots/*.png (1400 px wide).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from workbench.app.process import start_app

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "assets" / "screenshots"
WAIT = 120_000


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as runs:
        process, url = start_app("organism", runs)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                     args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
                page.goto(url)
                page.get_by_role("button", name="Use and preview this dataset").click()
                expect(page.get_by_text("records", exact=False).first).to_be_visible(timeout=WAIT)
                page.wait_for_timeout(1500)
                page.screenshot(path=OUT / "data.png", full_page=True)

                page.get_by_role("tab", name="Stage I: directions").click()
                page.get_by_role("button", name="Run Stage I").click()
                expect(page.get_by_text("suggested steering layers")).to_be_visible(timeout=WAIT)
                page.wait_for_timeout(1500)
                page.screenshot(path=OUT / "stage1.png", full_page=True)

                page.get_by_role("tab", name="Steering playground").click()
                page.get_by_label("Layers (comma-separated; empty = all)").fill("0,1,2,3")
                page.get_by_role("button", name="Compare unsteered vs steered").click()
                expect(page.get_by_label("Steered", exact=True)).not_to_have_value("", timeout=WAIT)
                page.get_by_role("button", name="Run sweep").click()
                expect(page.locator(".js-plotly-plot").filter(has_text="Strength sweep")).to_be_visible(timeout=WAIT)
                page.wait_for_timeout(1500)
                page.screenshot(path=OUT / "playground.png", full_page=True)

                page.get_by_role("tab", name="Stage II: refine").click()
                page.get_by_label("Layers (empty = all)").first.fill("1,2")
                page.get_by_label("Steps").fill("12")
                page.get_by_role("button", name="Start Stage II").click()
                expect(page.get_by_text("finished 12 steps")).to_be_visible(timeout=WAIT)
                page.wait_for_timeout(1500)
                page.screenshot(path=OUT / "stage2.png", full_page=True)

                page.get_by_role("tab", name="Evaluate").click()
                page.get_by_label("Layers (empty = all)").last.fill("1,2")
                page.get_by_role("button", name="Evaluate", exact=True).click()
                expect(page.locator(".js-plotly-plot").filter(has_text="Unsteered vs steered")).to_be_visible(
                    timeout=WAIT)
                page.wait_for_timeout(2000)
                page.screenshot(path=OUT / "evaluate.png", full_page=True)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=20)
    for path in sorted(OUT.glob("*.png")):
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
