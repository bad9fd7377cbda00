"""Regenerate the README screenshots from the running app: `python scripts/screenshots.py`.

Starts the app on the organism with a throw-away runs folder, drives it once in Chromium (Playwright) through
the data preview, a short PGD attack, Stage I, the playground, a short Stage II and an evaluation, then shows
every tab at 1280 and 1920 px wide and writes assets/screenshots/<tab>-<width>.png. Each shot is audited first
(`workbench.app.layout_audit`): text cut by an ellipsis, a box that hides its content, a squeezed figure; the
script stops and names what is cut rather than writing a picture of it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from workbench.app.layout_audit import CLIPPED
from workbench.app.process import start_app

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "assets" / "screenshots"
WAIT = 180_000
WIDTHS = (1280, 1920)
TABS = {"data": "Model & data", "attacks": "Attacks", "stage1": "Stage I: directions",
        "playground": "Steering playground", "stage2": "Stage II: refine", "evaluate": "Evaluate", "export": "Export"}
AUDITED = (".js-plotly-plot", "table", "textarea", "img")


def drive(page: Page) -> None:
    """One pass through the app, so that every tab has something to show."""
    page.get_by_role("button", name="Use and preview this dataset").click()
    expect(page.get_by_text("records", exact=False).first).to_be_visible(timeout=WAIT)

    page.get_by_role("tab", name=TABS["attacks"]).click()
    page.get_by_role("radio", name="toxic").check()
    page.get_by_role("radio", name="benign").check()
    page.get_by_label("…of source (empty: any)").fill("scenes")
    page.get_by_label("Steps").first.fill("20")
    page.get_by_label("Prompts", exact=True).fill("4")
    page.get_by_role("button", name="Attack", exact=True).click()
    expect(page.get_by_text("on the saved PNG", exact=False)).to_be_visible(timeout=WAIT)

    page.get_by_role("tab", name=TABS["stage1"]).click()
    page.get_by_role("button", name="Run Stage I").click()
    expect(page.get_by_text("suggested steering layers")).to_be_visible(timeout=WAIT)

    page.get_by_role("tab", name=TABS["playground"]).click()
    page.get_by_role("button", name="Compare unsteered vs steered").click()
    expect(page.get_by_label("Steered", exact=True)).not_to_have_value("", timeout=WAIT)
    page.get_by_role("button", name="Run sweep").click()
    expect(page.locator(".js-plotly-plot").filter(has_text="Strength sweep")).to_be_visible(timeout=WAIT)

    page.get_by_role("tab", name=TABS["stage2"]).click()
    page.get_by_label("Steps").last.fill("12")
    page.get_by_role("button", name="Start Stage II").click()
    expect(page.get_by_text("finished 12 steps")).to_be_visible(timeout=WAIT)

    page.get_by_role("tab", name=TABS["evaluate"]).click()
    page.get_by_role("button", name="Evaluate", exact=True).click()
    expect(page.locator(".js-plotly-plot").filter(has_text="Unsteered vs steered")).to_be_visible(timeout=WAIT)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as runs:
        process, url = start_app("organism", runs)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                     args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900}, device_scale_factor=1)
                page.goto(url)
                drive(page)
                for width in WIDTHS:
                    page.set_viewport_size({"width": width, "height": 900})
                    for name, tab in TABS.items():
                        page.get_by_role("tab", name=tab).click()
                        page.wait_for_timeout(1500)  # plotly redraws at the new width
                        cut = page.evaluate(CLIPPED, list(AUDITED))
                        problems += [f"{name} at {width} px: {problem}" for problem in cut]
                        page.screenshot(path=OUT / f"{name}-{width}.png", full_page=True)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=20)
    for path in sorted(OUT.glob("*.png")):
        print(f"wrote {path.relative_to(ROOT)}")
    if problems:
        raise SystemExit("cut off on screen:\n" + "\n".join(problems))


if __name__ == "__main__":
    main()
