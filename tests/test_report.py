"""The standalone HTML report: escaped text, the colour bar and opacity control, several images, long
and right-to-left text, the model named without a local path; and in a real browser, the slider and
the layout of a long answer."""

import html
import os
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

import glimpse
from glimpse.render import ALPHA, map_range, model_name
from glimpse.toy.model import default_model_path
from tiny_models import rand_image

QUESTION = "ما لون الشكل؟ what color is the object?"  # right-to-left first: the page must not force left-to-right
LONG_ANSWER = " ".join(["a red circle on the left of the image"] * 8)
EVIL = "</script><script>alert(1)</script><img src=x onerror=alert(2)>&amp;"


@pytest.fixture(scope="module")
def explanation(tiny_llava):
    """Two images, an Arabic question, a long answer: the hard cases in one cheap explanation."""
    model, processor = tiny_llava
    images = [rand_image(90, 60, seed=3), rand_image(40, 80, seed=4)]
    return glimpse.explain(model, processor, images, QUESTION, answer=LONG_ANSWER, method="raw_attention",
                           max_answer_tokens=100)


@pytest.fixture(scope="module")
def report(explanation):
    return explanation.to_html()


def test_every_text_is_escaped(explanation):
    T = len(explanation.answer_tokens)
    evil = replace(explanation, question=EVIL, prompt_words=[EVIL] * len(explanation.prompt_words),
                   answer_tokens=[EVIL] * T, notes=[EVIL], params={"option": EVIL}, model_id=EVIL, ranking_by=EVIL,
                   model_revision=EVIL)
    page = evil.to_html()
    assert page.count("<script") == 1 and page.count("</script") == 1  # the report's own script only
    assert EVIL not in page and "<img src=x" not in page
    assert html.escape(EVIL) in page


def test_colour_bar_and_opacity_control(explanation, report):
    assert report.count('<div class="colourbar">') == 2 and "linear-gradient(to right," in report
    assert re.search(rf'<input type="range" class="opacity" min="0" max="1" step="0.05"\s+value="{ALPHA}">', report)
    assert "img.heat').forEach(img => img.style.opacity = opacity.value)" in report
    for image in range(2):  # labelled with each holistic map's raw range
        low, high = (f"{value:.3g}" for value in map_range(explanation, image))
        assert f'<span class="low" title="the map\'s minimum">{low}</span>' in report
        assert f'<span class="high" title="the map\'s maximum">{high}</span>' in report


def test_two_images_are_two_overlays_with_a_layer_per_token(explanation, report):
    T = len(explanation.answer_tokens)
    assert re.findall(r'<figure class="map" data-i="(\d)">', report) == ["0", "1"]
    assert report.count('<img class="heat"') == 2
    # per image: the image, the holistic layer shown, and the script's layers (the whole answer, each token)
    assert report.count("data:image/jpeg;base64,") == 2 * (1 + 1 + 1 + T)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", report)


def test_a_long_answer_renders_every_token_and_wraps(explanation, report):
    T = len(explanation.answer_tokens)
    assert T >= 60
    assert report.count('<span class="tok"') == T and report.count('<td class="text" dir="auto">') == T
    assert ".tok{cursor:pointer;padding:1px 2px;border-radius:3px;white-space:pre-wrap}" in report


def test_right_to_left_text_reads_in_its_own_direction(report):
    assert "<meta charset='utf-8'>" in report
    assert '<span class="words" dir="auto">' in report and '<span class="answer" dir="auto">' in report
    for word in QUESTION.split():
        assert html.escape(word) in report


@pytest.mark.parametrize("model_id,shown", [
    (str(default_model_path()), "glimpse-toy"),
    ("/home/someone/models/my-llava", "my-llava"),
    ("C:\\Users\\someone\\my-llava", "my-llava"),
    ("~/models/my-llava/", "my-llava"),
    ("./my-llava", "my-llava"),
    ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-7b-hf"),
    ("gpt2", "gpt2"),
])
def test_the_model_is_named_without_a_local_path(model_id, shown):
    assert model_name(model_id) == shown


def test_the_report_shows_the_model_name_only(explanation):
    page = replace(explanation, model_id="/home/someone/models/my-llava").to_html()
    assert "model <code>my-llava</code>" in page and "/home/someone" not in page


def test_the_model_is_recorded_with_the_hub_commit_it_was_loaded_at(tiny_llava, monkeypatch, tmp_path):
    model, processor = tiny_llava
    commit = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setattr(model.config, "_commit_hash", commit, raising=False)  # as glimpse.load sets it
    result = glimpse.explain(model, processor, rand_image(64, 48), "what color is it?", answer=" red",
                             method="raw_attention")
    result.save(tmp_path / "e")
    loaded = glimpse.Explanation.load(tmp_path / "e")
    assert result.model_revision == loaded.model_revision == commit
    assert f"model <code>{loaded.model_id} @ 0123456789ab</code>" in loaded.to_html()
    monkeypatch.setattr(model.config, "_commit_hash", None)  # a local folder: no commit to record
    assert glimpse.explain(model, processor, rand_image(64, 48), "what color is it?", answer=" red",
                           method="raw_attention").model_revision is None


@pytest.fixture(scope="module")
def glimpse_report(tiny_llava):
    model, processor = tiny_llava
    explanation = glimpse.explain(model, processor, rand_image(64, 48), "is it there?", answer=" a red circle")
    return explanation, explanation.to_html()


def test_the_answer_reads_with_its_spaces_and_the_words_without_punctuation(glimpse_report):
    explanation, page = glimpse_report
    answer = re.search(r'<span class="answer" dir="auto">(.*?)</span></p>', page).group(1)
    assert html.unescape(re.sub(r"<[^>]+>", "", answer)) == " a red circle"  # not "aredcircle"
    words = re.findall(r'<span class="word" style="[^"]*">([^<]*)</span>', page)
    assert words == ["is", "it", "there"] == explanation.prompt_words


def test_dark_shades_have_white_text_and_every_shade_has_a_legend(glimpse_report):
    explanation, page = glimpse_report
    top = int(np.argmax(explanation.ranking))
    assert re.search(rf'<span class="tok" data-t="{top}" style="background:rgb\([\d,]+\);color:#fff"', page)
    light = int(np.argmin(explanation.ranking))
    assert re.search(rf'<span class="tok" data-t="{light}" style="background:rgb\([\d,]+\);color:#000"', page)
    assert 'Shades: <span class="swatch"></span> from the lowest to the highest score' in page


def test_the_tables_columns_are_explained_and_options_read_as_set_takes_them(glimpse_report):
    explanation, page = glimpse_report
    headers = re.findall(r'<th title="([^"]*)">([^<]*)</th>', page)
    assert [name for _, name in headers] == ["#", "token", "p", "weight", "beta_prompt", "gamma"]
    assert all(meaning for meaning, _ in headers)
    assert "<b>p</b>: the model&#x27;s probability of the token" in page
    assert "depth_scale=null" in page and "exclude_sinks=false" in page and 'path=&quot;auto&quot;' in page
    assert "None" not in page and "False" not in page


CHROMIUM = os.environ.get("GLIMPSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM, reason="the browser check needs Chromium (or GLIMPSE_CHROMIUM)")
def test_in_a_browser_the_slider_sets_the_opacity_and_nothing_overflows(explanation, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    explanation.to_html(tmp_path / "report.html")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto((tmp_path / "report.html").as_uri())
        width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        page.fill("input.opacity", "0.8")
        opacities = page.evaluate("[...document.querySelectorAll('img.heat')].map(i => getComputedStyle(i).opacity)")
        page.click(".tok[data-t='61']")
        showing = page.inner_text(".showing")
        direction = page.evaluate("getComputedStyle(document.querySelector('.words')).direction")
        browser.close()
    assert width[0] <= width[1]  # the 70-token answer and the two images wrap within the window
    assert opacities == ["0.8", "0.8"]
    assert showing == f"Showing: token 61 {explanation.answer_tokens[61]!r}".replace("'", '"')
    assert direction == "rtl"
