"""The web app, end to end in a real browser: Debian's Chromium driven by Playwright (which never
downloads a browser of its own here), against the app served in this process with the shipped model.

GLIMPSE_APP_SCREENSHOT=docs/app.png python -m pytest tests/test_serve.py  # also regenerates the README's picture
"""

import os
import shutil
import socket
import zipfile
from pathlib import Path

import pytest

gradio = pytest.importorskip("gradio", reason="the web app's extra: pip install 'glimpse-lvlm[ui]'")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from glimpse.serve import build_app, read_upload  # noqa: E402
from glimpse.toy import world  # noqa: E402

CHROMIUM = os.environ.get("GLIMPSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def url():
    app = build_app(None, device="cpu")
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def page(url):
    assert CHROMIUM, "the browser test needs Chromium: apt-get install chromium (or set GLIMPSE_CHROMIUM)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 1900})
        page.goto(url)
        yield page
        browser.close()


def upload(page, path) -> None:
    """Put a file in the upload box, clearing the one shown there first (as a user clicks its x)."""
    clear = page.locator("#upload button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator("#upload input[type=file]").set_input_files(str(path))


def map_source(page) -> str:
    return page.locator("#map img").first.get_attribute("src")


def test_upload_ask_and_look_token_by_token(page, tmp_path):
    sample = world.make_sample(11)  # "what color is the circle?": the shipped model answers "the circle is blue."
    sample.image.save(tmp_path / "scene.png")
    upload(page, tmp_path / "scene.png")
    expect(page.locator("#preview img")).to_be_visible(timeout=30_000)
    page.locator("#question textarea").fill(sample.question)
    page.locator("#second input").click()
    page.get_by_role("option", name="raw_attention").click()  # compared side by side
    page.locator("#explain").click()
    expect(page.locator("#answer-view")).to_contain_text("blue", timeout=120_000)
    expect(page.locator("#map img")).to_be_visible()
    expect(page.locator("#second-map img")).to_be_visible()
    expect(page.locator("#colour-bar")).to_contain_text("min-max normalised")
    expect(page.locator("#prompt-view")).to_contain_text("circle")
    holistic = map_source(page)
    tokens = page.locator("#token label")
    assert tokens.all_inner_texts() == ["whole answer", "0: the", "1: circle", "2: is", "3: blue", "4: ."]
    tokens.nth(4).click()  # the map of "blue"
    expect(page.locator("#map img")).not_to_have_attribute("src", holistic, timeout=30_000)
    with page.expect_download() as download:
        page.locator("#download a").first.click()
    with zipfile.ZipFile(download.value.path()) as folder:
        assert {"explanation.json", "arrays.safetensors", "report.html"} <= set(folder.namelist())
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    if os.environ.get("GLIMPSE_APP_SCREENSHOT"):
        shutil.copy(tmp_path / "app.png", os.environ["GLIMPSE_APP_SCREENSHOT"])
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_a_bad_file_and_a_bad_option_are_messages_in_the_page(page, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    upload(page, tmp_path / "notes.png")
    expect(page.locator("#message")).to_contain_text("error: notes.png is not an image file", timeout=30_000)
    assert "Traceback" not in page.content() and "/tmp/" not in page.locator("#message").inner_text()
    world.make_sample(11).image.save(tmp_path / "scene.png")
    upload(page, tmp_path / "scene.png")
    expect(page.locator("#message")).to_have_text("", timeout=30_000)
    page.locator("#question textarea").fill("what color is the circle?")
    page.locator("#options textarea").fill("head_lambda=0.5\nnonsense=1")
    page.locator("#explain").click()
    expect(page.locator("#message")).to_contain_text("nonsense", timeout=60_000)


def test_a_new_scene_comes_with_its_questions(page):
    page.locator("#scene").click()
    expect(page.locator("#preview img")).to_be_visible(timeout=30_000)
    question = page.locator("#question textarea").input_value()
    assert question.endswith("?")


def test_uploads_are_checked_before_they_are_decoded(tmp_path):
    from glimpse.errors import GlimpseError
    from glimpse.serve import MAX_PIXELS

    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(GlimpseError, match="x.txt is not an image file"):
        read_upload(tmp_path / "x.txt")
    side = int(MAX_PIXELS ** 0.5) + 1
    from PIL import Image

    Image.new("1", (side, side)).save(tmp_path / "huge.png")  # 1-bit: a small file of too many pixels
    with pytest.raises(GlimpseError, match=f"huge.png has {side} x {side} pixels"):
        read_upload(Path(tmp_path / "huge.png"))
