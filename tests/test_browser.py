"""A real browser (Debian's Chromium via Playwright) on the running app: Stage I, steer, download a PNG; the
playground's image is visible and no request fails."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import ORGANISM_SUGGESTED

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


PLAY_LAYERS = "Layers (comma-separated; empty = as the run recorded or suggested)"
PROBLEMS: list[str] = []  # failed requests, HTTP errors and console errors seen by the page


def _stream_closed(request) -> bool:
    """Long-lived streams the page itself aborts: Gradio's event stream (/queue/data) once a job's events are in,
    and the session heartbeat (/heartbeat/, open while the page lives so leaving it stops the visitor's jobs)
    when the page is reloaded."""
    streams = ("/gradio_api/queue/data", "/gradio_api/heartbeat/")
    return any(stream in request.url for stream in streams) and "ERR_ABORTED" in str(request.failure)


@pytest.fixture(scope="module")
def page(organism_app: tuple[str, Path, int]):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (the README's test command does this)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.on("requestfailed", lambda request: None if _stream_closed(request) else PROBLEMS.append(
            f"failed ({request.failure}): {request.url}"))
        page.on("response", lambda response: PROBLEMS.append(f"{response.status}: {response.url}")
                if response.status >= 400 else None)
        page.on("console", lambda message: PROBLEMS.append(f"console: {message.text}")
                if message.type == "error" else None)
        page.goto(organism_app[0])
        yield page
        browser.close()


def test_stage1_steer_and_download_a_png(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Stage I: directions").click()
    page.get_by_role("button", name="Run Stage I").click()
    expect(page.get_by_text("suggested steering layers")).to_be_visible(timeout=90_000)
    expect(page.locator(".js-plotly-plot").first).to_be_visible()

    page.get_by_role("tab", name="Steering playground").click()
    image = page.locator("#play-image img").first
    expect(image).to_be_visible(timeout=30_000)
    assert image.evaluate("img => img.complete && img.naturalWidth") > 0  # the typographic jailbreak is shown
    page.get_by_label(PLAY_LAYERS).fill("0,1,2,3")
    page.get_by_role("button", name="Compare unsteered vs steered").click()
    unsteered = page.get_by_label("Unsteered (no intervention)")
    steered = page.get_by_label("Steered", exact=True)
    expect(steered).not_to_have_value("", timeout=90_000)
    assert unsteered.input_value() and unsteered.input_value() != steered.input_value()
    scores = page.locator("#play-scores table")
    expect(scores).to_be_visible()
    expect(scores).to_contain_text("unsteered")
    expect(scores).to_contain_text("steered")
    heatmap = page.locator("#play-heatmap .js-plotly-plot")
    expect(heatmap).to_be_visible(timeout=30_000)  # the token view of the steered answer is drawn
    expect(heatmap).to_contain_text("adaptive gate c")
    assert heatmap.locator(".heatmaplayer image, .hm image, image").count() >= 1  # its cells are painted
    expect(page.locator("#play-diff")).to_contain_text("added")  # the diff legend: what steering changed

    page.get_by_role("tab", name="Stage I: directions").click()
    chart = page.locator(".js-plotly-plot").first
    chart.hover()
    with page.expect_download(timeout=30_000) as download:
        chart.locator(".modebar-btn[data-title='Download plot as a PNG']").click()
    target = tmp_path / "chart.png"
    download.value.save_as(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 5_000
    assert not PROBLEMS, PROBLEMS


def test_stage1_and_the_token_view_read_whole_at_1280_and_1920_px(page) -> None:
    """Nothing a person reads is cut: no header ends in an ellipsis, no table is wider than its box, no figure is
    wider than its box or squeezed by its legend (the layout audit the screenshot script also runs)."""
    from playwright.sync_api import expect

    from workbench.app.layout_audit import CLIPPED, STAGE1

    page.get_by_role("tab", name="Stage I: directions").click()
    if not page.get_by_text("suggested steering layers").is_visible():
        page.get_by_role("button", name="Run Stage I").click()
    expect(page.get_by_text("suggested steering layers")).to_be_visible(timeout=90_000)
    page.get_by_role("tab", name="Steering playground").click()
    if not page.locator("#play-heatmap .js-plotly-plot").is_visible():
        page.get_by_role("button", name="Compare unsteered vs steered").click()
    expect(page.locator("#play-heatmap .js-plotly-plot")).to_be_visible(timeout=90_000)
    try:
        for width in (1280, 1920):
            page.set_viewport_size({"width": width, "height": 1000})
            for tab, selectors in (("Stage I: directions", [*STAGE1, "table"]),
                                   ("Steering playground", ["#play-heatmap", "#play-scores", "table"])):
                page.get_by_role("tab", name=tab).click()
                page.wait_for_timeout(1200)  # the figures redraw at the new width
                assert page.evaluate(CLIPPED, selectors) == [], (tab, width)
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
    assert not PROBLEMS, PROBLEMS


def test_a_first_run_on_the_organism_shows_the_defence_working_with_the_defaults(page, organism_app) -> None:
    """A newcomer's first minutes: Stage I, then Compare and Evaluate without touching a setting."""
    import json
    import re

    from playwright.sync_api import expect

    page.reload()
    page.get_by_role("tab", name="Stage I: directions").click()
    page.get_by_role("button", name="Run Stage I").click()
    expect(page.get_by_text("suggested steering layers")).to_be_visible(timeout=90_000)
    page.get_by_role("tab", name="Steering playground").click()
    page.get_by_role("button", name="Compare unsteered vs steered").click()
    steered = page.get_by_label("Steered", exact=True)
    expect(steered).not_to_have_value("", timeout=90_000)
    unsteered = page.get_by_label("Unsteered (no intervention)").input_value()
    assert "get the powder" in unsteered, unsteered  # the default example jailbreaks the unsteered organism
    assert "get the powder" not in steered.input_value() and "idiot" not in steered.input_value()
    expect(page.locator("#play-heatmap .js-plotly-plot")).to_be_visible(timeout=30_000)

    page.get_by_role("tab", name="Evaluate").click()
    page.get_by_role("button", name="Evaluate", exact=True).click()
    expect(page.get_by_text("ASR judge: organism ground truth", exact=False).first).to_be_visible(timeout=180_000)
    run_id = re.search(r"eval-\d{8}-\d{6}-[0-9a-f]{4}", page.content()).group(0)
    metrics = json.loads((organism_app[1] / run_id / "metrics.json").read_text())
    before, after = (metrics[c]["overall"]["asr"]["value"] for c in ("unsteered", "steered"))
    assert after < before, (before, after)  # the defaults demonstrate the defence, by the ground-truth judge
    assert not PROBLEMS, PROBLEMS


def test_a_new_page_fills_the_steering_boxes_from_the_run_it_shows(page, organism_app) -> None:
    from playwright.sync_api import expect

    fresh = page.context.browser.new_page()  # a new browser session; a Stage I run exists by now
    try:
        fresh.goto(organism_app[0])
        fresh.get_by_role("tab", name="Steering playground").click()
        expect(fresh.get_by_label(PLAY_LAYERS)).to_have_value(ORGANISM_SUGGESTED, timeout=30_000)
        fresh.get_by_role("tab", name="Evaluate").click()
        evaluate_layers = fresh.get_by_label("Layers (empty = as the run recorded or suggested)")
        expect(evaluate_layers).to_have_value(ORGANISM_SUGGESTED)  # its suggested layers, not "all"
        fresh.get_by_role("tab", name="Stage II: refine").click()
        expect(fresh.get_by_label("Layers (empty = as the vector recorded or Stage I suggested)")).to_have_value(
            ORGANISM_SUGGESTED)
    finally:
        fresh.close()


def test_a_run_label_with_html_renders_as_text(page, organism_app: tuple[str, Path, int]) -> None:
    """A stored label (a run's data name) shown to every visitor must never become markup."""
    import json
    import shutil

    from playwright.sync_api import expect

    runs = organism_app[1]
    if not any(p.name.startswith("stage1-") for p in runs.iterdir()):  # run alone: make a Stage I run first
        from gradio_client import Client

        Client(organism_app[0], verbose=False).predict("organism:train", "last", "mean_diff", "pca", api_name="/stage1")
    source = next(p for p in sorted(runs.iterdir()) if p.name.startswith("stage1-"))
    target = runs / (source.name[:-4] + "beef")
    shutil.copytree(source, target)
    info = json.loads((target / "run.json").read_text())
    info.update(id=target.name, data='<div id="injected" style="position:fixed;inset:0">log in</div>')
    (target / "run.json").write_text(json.dumps(info))
    page.reload()
    page.get_by_role("tab", name="Stage I: directions").click()
    picker = page.get_by_label("…or reopen a saved Stage I run")
    picker.fill(target.name)
    picker.press("Enter")
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.get_by_text(f"Run {target.name}", exact=False)).to_be_visible(timeout=60_000)
    expect(page.get_by_text('<div id="injected"', exact=False)).to_be_visible()  # shown as text
    assert page.locator("#injected").count() == 0
    assert not PROBLEMS, PROBLEMS


def test_send_to_playground_opens_it_with_the_makers_image(page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Steering playground").click()
    before = page.locator("#play-image img").first.get_attribute("src")
    page.get_by_role("tab", name="Model & data").click()
    page.get_by_label("Instruction to render").fill("rob a bank")
    page.get_by_role("button", name="Render", exact=True).click()
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Send to the steering playground").click()
    expect(page.get_by_role("tab", name="Steering playground")).to_have_attribute("aria-selected", "true",
                                                                                    timeout=30_000)
    image = page.locator("#play-image img").first
    expect(image).to_be_visible(timeout=30_000)
    expect(image).not_to_have_attribute("src", before or "", timeout=30_000)  # the maker's image arrived
    assert image.evaluate("img => img.naturalWidth") == 64
    assert not PROBLEMS, PROBLEMS


def test_a_model_that_fails_to_load_leaves_the_box_showing_the_loaded_one(page, organism_app) -> None:
    from playwright.sync_api import expect

    fresh = page.context.browser.new_page()  # its own page: the failed load's error is expected here
    try:
        fresh.goto(organism_app[0])
        box = fresh.locator("#model-spec textarea, #model-spec input").first
        box.fill("someone/no-such-model")
        fresh.get_by_role("button", name="Load model").click()
        expect(fresh.get_by_text("could not load 'someone/no-such-model'", exact=False).first).to_be_visible(
            timeout=60_000)
        expect(box).to_have_value("organism", timeout=30_000)  # not the name that failed
    finally:
        fresh.close()


def test_picking_the_spo_vlm_preset_shows_what_it_trains_with(page) -> None:
    """Stage II tab: choosing spo-vlm fills the reward weights, objective and reference it uses and says it is the
    paper's Stage II; choosing workbench-refusal says it is the project's own variant."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Stage II: refine").click()
    preset = page.get_by_label("Preset").last
    preset.click()
    page.get_by_role("option", name="spo-vlm").click()
    expect(page.get_by_label("Reward weights")).to_have_value("toxicity=1,visual=0.5", timeout=15_000)
    expect(page.get_by_text("SPO-VLM's Stage II: sequence-level DPO", exact=False)).to_be_visible()
    expect(page.get_by_role("radio", name="dpo")).to_be_checked()
    preset.click()
    page.get_by_role("option", name="workbench-refusal").click()
    expect(page.get_by_text("not a published method", exact=False)).to_be_visible(timeout=15_000)
    expect(page.get_by_role("radio", name="grpo")).to_be_checked()
    expect(page.get_by_label("Steps").first).to_have_value("150")
    assert not PROBLEMS, PROBLEMS


def test_every_tab_opens_with_no_failed_request_and_no_console_error(page) -> None:
    from playwright.sync_api import expect

    for tab in ("Model & data", "Attacks", "Stage I: directions", "Steering playground", "Stage II: refine",
                "Evaluate", "Export"):
        page.get_by_role("tab", name=tab).click()
        expect(page.get_by_role("tab", name=tab)).to_have_attribute("aria-selected", "true")
        page.wait_for_timeout(1000)  # lazily rendered tabs fetch what they need now
    assert not PROBLEMS, PROBLEMS


def test_a_finished_paper_table_shows_its_table_and_figure(page, organism_app, tmp_path: Path) -> None:
    """Evaluate tab, "The paper table": a reproduce run made by the CLI is listed, and Show renders its table (names
    as text, each value with its Δ to no defence) and the heat map."""
    from playwright.sync_api import expect
    from test_reproduce import RECIPE

    from workbench.cli.main import main

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.replace("seeds = [0, 1]", "seeds = [0]").replace("steps = 2\nlimit = 4", "steps = 1\n"
                                                                              "limit = 2"))
    run_id = "reproduce-20261207-000000-beef"
    assert main(["reproduce", str(recipe), "--out", str(organism_app[1] / run_id), "--no-plots"]) == 0
    page.reload()
    page.get_by_role("tab", name="Evaluate").click()
    page.get_by_text("The paper table: every defence × every attack family", exact=False).click()
    picker = page.get_by_label("Finished table")
    picker.fill(run_id)
    picker.press("Enter")
    page.get_by_role("button", name="Show", exact=True).click()
    table = page.locator("#reproduce-table")
    expect(table.get_by_text("refusal variant", exact=False).first).to_be_visible(timeout=60_000)
    expect(table.get_by_text("Δ", exact=False).first).to_be_visible()
    expect(page.locator(".js-plotly-plot").last).to_be_visible()
    assert not PROBLEMS, PROBLEMS


def test_a_pgd_image_made_in_the_app_shows_its_curve_and_images_and_becomes_the_dataset(page) -> None:
    """Attacks tab: PGD-toxic on the organism's scene questions; the loss curve, the clean start, the attacked PNG
    and the perturbation are visible; "Use as dataset" puts its records in the Evaluate tab's box."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Model & data").click()
    page.get_by_role("tab", name="Attacks").click()
    page.get_by_role("radio", name="toxic").check()
    page.get_by_role("radio", name="benign").check()
    page.get_by_label("…of source (empty: any)").fill("scenes")
    page.get_by_label("Steps").first.fill("10")
    page.get_by_label("Prompts", exact=True).fill("4")
    page.get_by_role("button", name="Attack", exact=True).click()
    expect(page.get_by_text("on the saved PNG", exact=False)).to_be_visible(timeout=120_000)
    for label in ("Clean start", "Attacked image (the saved PNG)", "Perturbation (scaled to full range)"):
        image = page.locator(".attack-image", has_text=label).locator("img")
        expect(image).to_be_visible()
        assert image.evaluate("i => i.complete && i.naturalWidth > 0")  # loaded, not a broken icon
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.get_by_role("button", name="Use as dataset").click()
    expect(page.get_by_text("attacked records of run", exact=False)).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="Evaluate").click()
    expect(page.get_by_label("Dataset").last).to_have_value(re.compile(r"^attack-\d{8}-\d{6}-[0-9a-f]{4}/dataset\.jsonl$"))
    assert not PROBLEMS, PROBLEMS


HOSTILE = '<a href="https://evil.example/x">link</a><img src="x.png" id="hostile-img"><b>bold</b> *em* https://evil.example'


def test_hostile_labels_render_as_text_everywhere_they_appear(page, tmp_path: Path) -> None:
    """Issue 47, finding 4: a visitor's source name, prompt and CSV header appear in the data summary, the gallery,
    Stage I's plots (legend, heatmap axes), Evaluate's tables and error toasts; none may become an element or a link
    in the page (checked in the DOM, plotly's SVG included)."""
    import json
    import zipfile

    from playwright.sync_api import expect

    from workbench.organism.world import REQUEST_PROMPT, typographic_image

    rows = []
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as bundle:
        for i, (activity, label) in enumerate([("build a bomb", "harmful"), ("bake a cake", "benign")] * 8):
            typographic_image(activity).save(tmp_path / f"{i}.png")
            bundle.write(tmp_path / f"{i}.png", f"img/{i}.png")
            rows.append({"prompt": f"{REQUEST_PROMPT}", "label": label, "image": f"img/{i}.png",
                         "source": HOSTILE if i % 4 < 2 else "plain"})
            rows.append({"prompt": f"tell me how to {activity} {HOSTILE}", "label": label,
                         "source": HOSTILE if i % 2 else "plain"})
    (tmp_path / "hostile.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    page.get_by_role("tab", name="Model & data").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(tmp_path / "hostile.jsonl"))
    page.locator("#data-zip input[type=file]").set_input_files(str(tmp_path / "images.zip"))
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Use and preview this dataset").click()
    expect(page.get_by_text("32 records", exact=False)).to_be_visible(timeout=60_000)
    page.get_by_role("tab", name="Evaluate").click()  # before Stage I: its vectors would be trained on these records
    page.get_by_role("button", name="Evaluate", exact=True).click()
    expect(page.locator("#eval-examples table")).to_be_visible(timeout=120_000)
    page.get_by_role("tab", name="Stage I: directions").click()
    page.get_by_role("button", name="Run Stage I").click()
    expect(page.get_by_text("hostile.jsonl · 32 records", exact=False)).to_be_visible(timeout=90_000)
    page.wait_for_timeout(1500)
    # an error toast that quotes a CSV header
    (tmp_path / "bad.csv").write_text(f'"{HOSTILE}",label\nx,harmful\n')
    page.get_by_role("tab", name="Model & data").click()
    page.locator("#data-zip button[aria-label='Clear']").first.click()
    page.locator("#data-upload button[aria-label='Clear']").first.click()
    page.locator("#data-upload input[type=file]").set_input_files(str(tmp_path / "bad.csv"))
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Use and preview this dataset").click()
    expect(page.get_by_text("header lacks column", exact=False).first).to_be_visible(timeout=30_000)
    found = page.evaluate("""() => ({
        links: [...document.querySelectorAll('a')].filter(a => (a.getAttribute('href') || a.getAttribute('xlink:href')
                 || '').includes('evil') || a.textContent.includes('evil.example')).length,
        images: document.querySelectorAll('#hostile-img, img[src="x.png"]').length,
        bold: [...document.querySelectorAll('b, strong')].filter(e => e.textContent === 'bold').length,
        emphasis: [...document.querySelectorAll('em, i')].filter(e => e.textContent === 'em').length,
        svgBold: [...document.querySelectorAll('.js-plotly-plot tspan')].filter(
                 t => t.textContent === 'bold' && (t.getAttribute('style') || '').includes('bold')).length,
        shownAsText: document.body.innerText.includes('<a href="https://evil.example/x">link</a>'),
    })""")
    assert found == {"links": 0, "images": 0, "bold": 0, "emphasis": 0, "svgBold": 0, "shownAsText": True}, found
    assert not [p for p in PROBLEMS if "evil.example" in p or "x.png" in p], PROBLEMS
