"""The classification page in a real headless Chromium against uvicorn on 127.0.0.1.

Needs Debian's ``chromium`` + ``chromium-driver`` (``apt-get install -y chromium chromium-driver``)
and the ``selenium`` package (dev extra); skipped with the reason when any is missing.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="serving needs the serve extra: pip install -e '.[serve]'")
selenium = pytest.importorskip("selenium", reason="browser test needs selenium: pip install selenium (dev extra)")

from newsbias.config import ServeConfig  # noqa: E402
from newsbias.records import join_title  # noqa: E402
from newsbias.serve import UNCERTAIN_BELOW, create_app, load_model  # noqa: E402

from conftest import PLANTED, make_planted_rows  # noqa: E402
from serve_fixtures import RunningServer, adapter_for  # noqa: E402

LABELS = ["left", "center", "right"]
CHROMIUM = os.environ.get("NEWSBIAS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = os.environ.get("NEWSBIAS_CHROMEDRIVER") or shutil.which("chromedriver")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed: apt-get install -y chromium chromium-driver "
           f"(found chromium={CHROMIUM}, chromedriver={CHROMEDRIVER})")]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_qwen_dir, planted_data_dir):
    adapter = adapter_for("lm", tmp_path_factory, tiny_qwen_dir, planted_data_dir)
    cfg = ServeConfig(adapter=str(adapter), max_article_chars=5000)
    predictor = load_model(cfg)
    with RunningServer(create_app(cfg, predictor=predictor)) as srv:
        srv.predictor = predictor
        yield srv


@pytest.fixture(scope="module")
def chance_server(tiny_qwen_dir):
    """The untrained tiny Qwen3 zero-shot: a chance-level model, about a third for each label."""
    cfg = ServeConfig(model=str(tiny_qwen_dir), prompt={"max_length": 64, "chat_template": "off"})
    predictor = load_model(cfg)
    with RunningServer(create_app(cfg, predictor=predictor)) as srv:
        srv.predictor = predictor
        yield srv


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="newsbias-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1000,900", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    # an explicit driver path: selenium then never tries to download one
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_page_hides_the_title_field_from_a_model_that_does_not_read_titles(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert not server.predictor.settings.prepend_title  # the fixture's model was trained on bodies alone
    browser.get(server.url + "/")
    WebDriverWait(browser, 20).until(lambda b: "Model:" in b.find_element(By.ID, "model").text)
    assert not browser.find_element(By.ID, "title").is_displayed()
    assert browser.find_element(By.ID, "text").is_displayed()


@pytest.fixture
def reads_titles(server):
    """The server's model as if trained on texts that begin with their titles (prep.clean.prepend_title)."""
    server.predictor.settings.prepend_title = True
    yield server
    server.predictor.settings.prepend_title = False


def test_page_classifies_an_article(reads_titles, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    server = reads_titles
    title, text = "Budget talks", make_planted_rows(1, seed=21)[0]["input"]
    browser.get(server.url + "/")
    assert "newsbias" in browser.title
    WebDriverWait(browser, 20).until(lambda b: "Model:" in b.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "title").send_keys(title)
    browser.find_element(By.ID, "text").send_keys(text)
    browser.find_element(By.ID, "submit").click()
    wait = WebDriverWait(browser, 20)
    wait.until(EC.visibility_of_element_located((By.ID, "label")))
    label = browser.find_element(By.ID, "label").text

    ref = server.predictor.predict_proba([join_title(title, text)])[0]  # as a model that reads titles joins them
    assert label == LABELS[int(np.argmax(ref))]
    rows = browser.find_elements(By.CSS_SELECTOR, "#bars .row")
    assert [r.get_attribute("data-label") for r in rows] == LABELS
    for r, p in zip(rows, ref):
        pct = float(r.find_element(By.CLASS_NAME, "pct").text.rstrip("%"))
        assert abs(pct - 100 * p) < 0.06
        width = r.find_element(By.CLASS_NAME, "bar").value_of_css_property("width")
        track = r.find_element(By.CLASS_NAME, "track").value_of_css_property("width")
        assert abs(float(width.rstrip("px")) / float(track.rstrip("px")) - p) < 0.02  # the bar is drawn to scale
    assert "Model:" in browser.find_element(By.ID, "model").text  # /v1/model was fetched
    assert browser.save_screenshot(str(tmp_path / "page.png")) and (tmp_path / "page.png").stat().st_size > 0

    # "Which words decided it?": every word read, shaded by its effect, the strongest named
    browser.find_element(By.ID, "why").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#words span.w"))
    words = browser.find_elements(By.CSS_SELECTOR, "#words span.w")
    assert [w.text for w in words] == join_title(title, text).split()
    planted = [w for w in words if w.text.strip(".").lower() == PLANTED[label]]
    assert planted and all("points for " + label in w.get_attribute("title") for w in planted)
    assert "Strongest: " in browser.find_element(By.ID, "why-note").text


def classify_on_page(browser, url: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")
    browser.find_element(By.ID, "text").send_keys(text)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 20).until(EC.visibility_of_element_located((By.ID, "result")))


def pixel_at(browser, shot, element, dx: float | None = None) -> tuple[int, int, int]:
    """The screenshot's colour inside ``element``: at its vertical middle, ``dx`` px from its left (default: centre)."""
    r = browser.execute_script("const r = arguments[0].getBoundingClientRect();"
                               "return [r.left, r.top, r.width, r.height, window.devicePixelRatio];", element)
    x = r[0] + (r[2] / 2 if dx is None else dx)
    return shot.getpixel((int(x * r[4]), int((r[1] + r[3] / 2) * r[4])))[:3]


def css_rgb(element, prop: str = "background-color") -> tuple[int, int, int]:
    return tuple(int(v) for v in element.value_of_css_property(prop).split("(")[1].split(")")[0].split(",")[:3])


def test_page_marks_a_chance_level_answer_uncertain(chance_server, browser, tmp_path):
    """Probability bars and the 'uncertain' marker are on the page and in its screenshot."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    text = make_planted_rows(1, seed=22)[0]["input"]
    ref = chance_server.predictor.predict_proba([text])[0]
    assert ref.max() < UNCERTAIN_BELOW and ref.min() > 0.2  # the premise: about a third each
    classify_on_page(browser, chance_server.url, text)

    marker = browser.find_element(By.ID, "uncertain")
    assert marker.is_displayed() and marker.text == "uncertain"
    assert browser.find_element(By.ID, "certainty").text.startswith("Uncertain:")
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert [b.get_attribute("class") for b in bars] == [f"bar {label}" for label in LABELS]
    assert all(b.is_displayed() and b.size["width"] > 0 for b in bars)

    png = tmp_path / "chance.png"
    assert browser.save_screenshot(str(png)) and png.stat().st_size > 0
    with Image.open(png) as img:
        shot = img.convert("RGB")
    for bar in bars:
        assert pixel_at(browser, shot, bar) == css_rgb(bar)
    assert pixel_at(browser, shot, marker, dx=3) == css_rgb(marker)  # in the marker's padding, beside its text


def test_page_shows_server_errors(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    # over max_article_chars (413); set by script, since typing 5,000 keys takes seconds
    browser.execute_script("document.getElementById('text').value = arguments[0]", "x" * 5001)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "error").text)
    assert "max_article_chars" in browser.find_element(By.ID, "error").text
    assert not browser.find_element(By.ID, "result").is_displayed()
