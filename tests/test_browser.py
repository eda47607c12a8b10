"""The predict page in a real headless Chromium (Debian's), against a real HTTP server on loopback."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from werkzeug.serving import make_server

from tests.support.helpers import free_port, make_radiograph

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
HOSTILE_NAME = "<img src=x onerror=alert(1)>.png"
PAGE_KEY = "page-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server_url(app) -> str:
    """The session's app served by a threaded Werkzeug server on a free loopback port."""
    url, server, thread = serve(app)
    yield url
    server.shutdown()
    thread.join(timeout=10)


def serve(flask_app) -> tuple[str, object, threading.Thread]:
    """Serve an app with a threaded Werkzeug server on a free loopback port: (url, server, thread)."""
    server = make_server("127.0.0.1", free_port(), flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server, thread


@pytest.fixture(scope="module")
def keyed_server_url(tiny_repository):
    """The service with one API key, served on loopback."""
    from app import create_app

    flask_app = create_app({"MODELS_DIR": str(tiny_repository), "API_KEYS": f"page:{PAGE_KEY}", "AUDIT_LOG": ""})
    url, server, thread = serve(flask_app)
    yield url
    server.shutdown()
    thread.join(timeout=10)
    flask_app.extensions["pipeline_loader"].close()


@pytest.fixture(scope="module")
def triage_server_url(tiny_repository, tmp_path_factory):
    """The service over a copy of the tiny repository whose wrist expert flags every study (rule-in 0)."""
    import json
    import shutil

    from app import create_app

    folder = tmp_path_factory.mktemp("triage-page") / "repository"
    shutil.copytree(tiny_repository, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["experts"]["XR_WRIST"]["operating_points"] = {"rule_out": {"threshold": 0.0},
                                                          "rule_in": {"threshold": 0.0}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    flask_app = create_app({"MODELS_DIR": str(folder), "AUDIT_LOG": ""})
    url, server, thread = serve(flask_app)
    yield url
    server.shutdown()
    thread.join(timeout=10)
    flask_app.extensions["pipeline_loader"].close()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server_url) -> Page:
    """A fresh page on the predict page; console errors and outside requests are collected."""
    context = browser.new_context(viewport={"width": 1000, "height": 1100})
    new_page = context.new_page()
    new_page.console_errors = []
    new_page.outside_requests = []
    new_page.on("console", lambda message: message.type == "error" and new_page.console_errors.append(message.text))
    new_page.on("request", lambda request: request.url.startswith(("http://", "https://"))
                and not request.url.startswith(server_url) and new_page.outside_requests.append(request.url))
    new_page.goto(server_url + "/")
    yield new_page
    context.close()


def image_file(name: str, data: bytes, mime_type: str = "image/png") -> dict:
    """A file payload for set_input_files."""
    return {"name": name, "mimeType": mime_type, "buffer": data}


def test_page_shows_the_result_of_a_two_view_study(page, tmp_path):
    page.get_by_label("Choose images").set_input_files([
        image_file("frontal.png", make_radiograph(seed=11)),
        image_file(HOSTILE_NAME, make_radiograph(seed=12)),
    ])
    expect(page.get_by_role("img", name="Preview of view 1: frontal.png")).to_be_visible()
    page.get_by_label("Body part").select_option("XR_WRIST")
    page.get_by_role("button", name="Analyse study").click()

    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    expect(page.locator("#result-body-part")).to_have_text("Wrist")
    expect(page.locator("#sr-button")).to_be_hidden()  # an SR only for DICOM input
    expect(page.locator("#result-abnormality")).to_have_text(re.compile(r"^\d{1,3}\.\d %$"))
    label = page.locator("#result-label").text_content()
    assert label in ("normal", "abnormal")
    # The tiny repository has no operating points: the page says so instead of inventing a category.
    expect(page.locator("#result-triage")).to_have_text("not available")
    expect(page.locator("#result-operating-points")).to_have_text("this model has no operating points")
    expect(page.locator("#rule-in-mark")).to_be_hidden()
    rows = page.locator("#views-body tr")
    expect(rows).to_have_count(2)
    assert rows.nth(0).locator("td").first.text_content() == "frontal.png"
    # The hostile file name is shown as text, never parsed as HTML.
    assert rows.nth(1).locator("td").first.text_content() == HOSTILE_NAME
    assert page.locator("#views-body img").count() == 0
    width = page.locator("#abnormality-fill").evaluate("element => element.style.width")
    assert width.endswith("%") and 0.0 <= float(width[:-1]) <= 100.0
    screenshot = Path(os.environ.get("TRIAGE_SCREENSHOT_DIR", tmp_path)) / "predict-result.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert page.console_errors == [] and page.outside_requests == []


def test_page_shows_the_triage_category_and_the_operating_points(browser, triage_server_url):
    context = browser.new_context()
    page = context.new_page()
    page.goto(triage_server_url + "/")
    page.get_by_label("Choose images").set_input_files([image_file("a.png", make_radiograph(seed=15))])
    page.get_by_label("Body part").select_option("XR_WRIST")
    page.get_by_role("button", name="Analyse study").click()
    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    expect(page.locator("#result-triage")).to_have_text("flagged")
    expect(page.locator("#result-triage")).to_have_class("triage flagged")
    expect(page.locator("#result-operating-points")).to_have_text("rule-out 0.0 %, rule-in 0.0 %")
    expect(page.locator("#rule-in-mark")).to_be_visible()
    context.close()


def test_page_shows_bidirectional_override_in_a_file_name_escaped(page):
    # "evil\u202egnp.png" would display as "evilgnp.png" reversed ("evilpng.gnp"); the page shows the escape.
    page.get_by_label("Choose images").set_input_files([image_file("evil\u202egnp.png", make_radiograph(seed=13))])
    expect(page.locator("#previews li span")).to_have_text("evil\\u202egnp.png")
    page.get_by_role("button", name="Analyse study").click()
    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    cell = page.locator("#views-body tr").first.locator("td").first
    assert cell.text_content() == "evil\\u202egnp.png"
    assert "\u202e" not in page.locator("body").text_content()


def test_page_asks_for_the_api_key_and_keeps_it_for_the_tab_only(browser, keyed_server_url):
    context = browser.new_context()
    page = context.new_page()
    page.goto(keyed_server_url + "/")
    key_field = page.get_by_label("API key")
    expect(key_field).to_be_hidden()
    page.get_by_label("Choose images").set_input_files([image_file("a.png", make_radiograph(seed=14))])
    page.get_by_role("button", name="Analyse study").click()
    expect(page.get_by_role("alert")).to_contain_text("HTTP 401", timeout=30_000)
    expect(key_field).to_be_visible()
    key_field.fill(PAGE_KEY)
    page.get_by_role("button", name="Analyse study").click()
    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    assert page.evaluate("sessionStorage.getItem('triage-api-key')") == PAGE_KEY
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    expect(page.get_by_label("API key")).to_have_value(PAGE_KEY)  # same tab: still there
    other_tab = context.new_page()
    other_tab.goto(keyed_server_url + "/")
    expect(other_tab.get_by_label("API key")).to_be_hidden()  # another tab: not shared
    context.close()


def test_page_shows_an_error_in_words_for_a_text_file(page, tmp_path):
    page.get_by_label("Choose images").set_input_files([image_file("notes.txt", b"just some text", "text/plain")])
    page.get_by_role("button", name="Analyse study").click()
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible(timeout=30_000)
    expect(alert).to_contain_text("notes.txt: not an image")
    expect(alert).to_contain_text("HTTP 415")
    expect(page.get_by_text("No preview")).to_be_visible()
    expect(page.locator("#result")).to_be_hidden()
    screenshot = Path(os.environ.get("TRIAGE_SCREENSHOT_DIR", tmp_path)) / "predict-error.png"
    page.screenshot(path=str(screenshot), full_page=True)


def test_page_accepts_dropped_files(page):
    data = list(make_radiograph(seed=14))
    page.evaluate("""bytes => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"}));
        document.getElementById("drop-zone").dispatchEvent(
            new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", data)
    expect(page.get_by_role("img", name="Preview of view 1: dropped.png")).to_be_visible()
    page.get_by_role("button", name="Analyse study").click()
    expect(page.locator("#views-body tr td").first).to_have_text("dropped.png", timeout=30_000)


def test_page_is_usable_from_the_keyboard(page):
    # Playwright turns on file-chooser interception without waiting for a reply; a listener added this early
    # makes sure it is on before Enter opens the chooser (otherwise the headless dialog opens unseen).
    page.on("filechooser", lambda chooser: None)
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.id")
    assert focused == "drop-zone"
    with page.expect_file_chooser() as chooser_info:
        page.keyboard.press("Enter")
    chooser_info.value.set_files([image_file("view.png", make_radiograph(seed=13))])
    expect(page.get_by_role("button", name="Remove view.png")).to_be_visible()
    page.get_by_role("button", name="Analyse study").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#views-body tr")).to_have_count(1, timeout=30_000)


def test_page_shows_heatmaps_on_request_with_an_overlay_toggle(page):
    page.get_by_label("Choose images").set_input_files([
        image_file("frontal.png", make_radiograph(width=180, height=120, seed=21)),
        image_file("lateral.png", make_radiograph(seed=22)),
    ])
    page.get_by_label("Show where the model looked").check()
    page.get_by_role("button", name="Analyse study").click()
    # The service adds explanations only when the page sent explain=true.
    expect(page.locator("#explanations")).to_be_visible(timeout=30_000)
    images = page.locator("#explanation-list img.explanation")
    expect(images).to_have_count(2)
    first = images.nth(0)
    assert first.get_attribute("src").startswith("data:image/png;base64,")
    # The overlay is drawn at the view's own size (180x120), and the browser decoded it.
    expect(first).to_have_js_property("naturalWidth", 180)
    expect(first).to_have_js_property("naturalHeight", 120)
    assert re.search(r"peak \(\d+, \d+\)", page.locator("#explanation-list li").first.text_content())
    page.get_by_label("Heatmap over the views").uncheck()
    expect(first).to_have_attribute("src", re.compile(r"^blob:"))
    page.get_by_label("Heatmap over the views").check()
    expect(first).to_have_attribute("src", re.compile(r"^data:image/png"))
    assert page.console_errors == [] and page.outside_requests == []


def test_page_without_the_heatmap_box_shows_no_heatmaps(page):
    page.get_by_label("Choose images").set_input_files([image_file("frontal.png", make_radiograph(seed=23))])
    page.get_by_role("button", name="Analyse study").click()
    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    expect(page.locator("#explanations")).to_be_hidden()
    expect(page.locator("#explanation-list li")).to_have_count(0)


def test_page_takes_dicom_shows_no_patient_data_and_downloads_the_sr(page, tmp_path):
    import numpy as np
    import pydicom
    from pydicom.uid import Comprehensive3DSRStorage, generate_uid

    from tests.support.dicom_factory import LEAK_MARKERS, make_dataset, synthetic_radiograph, to_bytes

    pixels = np.round(synthetic_radiograph("XR_WRIST", seed=31) * 255).astype(np.uint8)
    study_uid = generate_uid()
    page.get_by_label("Choose images").set_input_files([
        image_file("pa.dcm", to_bytes(make_dataset(pixels, study_uid=study_uid)), "application/dicom"),
        image_file("lateral", to_bytes(make_dataset(pixels[::-1], study_uid=study_uid)), "application/octet-stream"),
    ])
    expect(page.locator("#previews .no-preview")).to_have_count(2)
    expect(page.locator("#previews .no-preview").first).to_have_text("DICOM view 1")
    page.get_by_role("button", name="Analyse study").click()
    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    expect(page.locator("#views-body tr")).to_have_count(2)
    expect(page.locator("#result-dicom")).to_have_text("DICOM study: modality DX, body part examined WRIST")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download result as DICOM SR").click()
    download = download_info.value
    assert download.suggested_filename == "triage-result-sr.dcm"
    saved = tmp_path / "sr.dcm"
    download.save_as(saved)
    report = pydicom.dcmread(saved)
    assert report.SOPClassUID == Comprehensive3DSRStorage and report.StudyInstanceUID == study_uid
    shown = page.locator("body").inner_text()
    assert not [marker for marker in LEAK_MARKERS if marker in shown]
    assert page.console_errors == [] and page.outside_requests == []
