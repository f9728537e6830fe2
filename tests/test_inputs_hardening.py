"""`glimpse.explain` on inputs it cannot explain as given: a prompt or answer longer than the model's
context, a long answer (the default cap), answer words the model does not know, the model's image
placeholder typed into the prompt. Each is one GlimpseError saying what to change, or a warning and a
note when the explanation goes on with part of the input."""

import copy
import warnings

import pytest

import glimpse
from glimpse.errors import InputWarning
from glimpse.models import adapter_for
from glimpse.pipeline import DEFAULT_MAX_ANSWER_TOKENS
from glimpse.toy import world
from tiny_models import rand_image

CHEAP = "raw_attention"  # one forward pass: what these tests check happens before or around it


@pytest.fixture(scope="module")
def shipped():
    """The shipped shapes-world model: context length 512, a word-level vocabulary of 43 tokens."""
    return glimpse.load(None, device="cpu")


@pytest.fixture(scope="module")
def scene():
    return world.make_sample(3)


@pytest.fixture
def no_forward(shipped, monkeypatch):
    """The shipped model, failing the test if it runs a forward pass (generate included)."""
    def forward(*args, **kwargs):
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr(shipped.model, "forward", forward)
    return shipped


def explain(loaded, scene, prompt=None, **kwargs):
    kwargs.setdefault("method", CHEAP)
    return glimpse.explain(loaded.model, loaded.processor, scene.image, prompt or scene.question, **kwargs)


# --- context length ------------------------------------------------------------------------------

@pytest.mark.parametrize("answer", [None, "the circle is red ."])
def test_a_prompt_past_the_context_length_is_refused_before_any_forward_pass(no_forward, scene, answer):
    prompt = ("what color is the circle ? " * 800)[:20_000]
    with pytest.raises(glimpse.PromptError, match=r"the prompt is \d{4} tokens, 196 of them standing for the "
                                                  r"image\(s\).*context length of 512 tokens; shorten the prompt "
                                                  r"\(or the system prompt: their text takes 4450 tokens\)$"):
        explain(no_forward, scene, prompt, answer=answer)


@pytest.mark.parametrize("context, advice", [(150, "the image tokens alone do not fit: give fewer or smaller images"),
                                             (200, r"shorten the prompt .*takes 11 tokens\), or give fewer or smaller")])
def test_when_the_image_tokens_take_the_room_fewer_images_are_advised(no_forward, scene, monkeypatch, context, advice):
    monkeypatch.setattr(type(adapter_for(no_forward.model, no_forward.processor)), "context_length",
                        lambda self: context)
    with pytest.raises(glimpse.PromptError, match=f"the prompt is 207 tokens.*context length of {context} tokens; "
                                                  f"{advice}"):
        explain(no_forward, scene, answer="the circle is red .")


def test_an_answer_past_the_context_length_is_refused_before_any_forward_pass(no_forward, scene):
    answer = " ".join(["the circle is red ."] * 80)  # 400 tokens
    with pytest.raises(glimpse.AnswerError, match=r"the prompt is \d+ tokens, 196 of them standing for the image\(s\), "
                                                  r"and the answer 400: \d+ in all, more than the model's context "
                                                  r"length of 512 tokens; shorten the answer.*max_answer_tokens \d+ at"):
        explain(no_forward, scene, answer=answer, max_answer_tokens=1000)


def test_a_generated_answer_stops_at_the_context_length_with_a_note(shipped, scene, monkeypatch):
    from glimpse.pipeline import _encoded

    n_prompt = _encoded(shipped.model, shipped.processor, scene.image, scene.question, None, [])[3]["input_ids"].shape[1]
    monkeypatch.setattr(type(adapter_for(shipped.model, shipped.processor)), "context_length",
                        lambda self: n_prompt + 2)
    with pytest.warns(InputWarning, match=rf"generated up to the model's context length \({n_prompt + 2} tokens\): "
                                          "it stops after 2 tokens"):
        result = explain(shipped, scene)
    assert len(result.answer_token_ids) == 2 and any("context length" in note for note in result.notes)


def test_a_model_without_a_known_context_length_is_not_checked(shipped, scene, monkeypatch):
    adapter = type(adapter_for(shipped.model, shipped.processor))
    assert adapter_for(shipped.model, shipped.processor).context_length() == 512
    monkeypatch.setattr(adapter, "context_length", lambda self: None)
    answer = " ".join(["the circle is red ."] * 62)  # 310 tokens: past 512 with the prompt
    with warnings.catch_warnings():
        warnings.simplefilter("error", glimpse.GlimpseWarning)
        result = explain(shipped, scene, answer=answer, max_answer_tokens=400)
    assert len(result.answer_token_ids) == 310 and result.notes == []


# --- the answer cap ------------------------------------------------------------------------------

def test_a_long_answer_is_capped_by_default_with_a_warning_and_a_note(shipped, scene):
    answer = " ".join(["the circle is red ."] * 100)  # 500 words and tokens
    assert DEFAULT_MAX_ANSWER_TOKENS == 64
    with pytest.warns(InputWarning, match=r"the answer has 500 tokens; only its first 64 are explained \(the default "
                                          r"cap\): give max_answer_tokens=500 to explain all of it"):
        result = explain(shipped, scene, answer=answer)
    assert len(result.answer_token_ids) == 64 and result.answer.startswith("the circle is red.")
    assert any("only its first 64 are explained" in note for note in result.notes)


def test_a_larger_max_answer_tokens_raises_the_cap_without_a_warning(shipped, scene):
    answer = " ".join(["the circle is red ."] * 30)  # 150 tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error", glimpse.GlimpseWarning)
        raised = explain(shipped, scene, answer=answer, max_answer_tokens=100)
        short = explain(shipped, scene, answer=answer, max_answer_tokens=3)
    assert len(raised.answer_token_ids) == 100 and raised.notes == []
    assert len(short.answer_token_ids) == 3 and short.notes == []


# --- unknown words -------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, message", [
    ("zzz qqq", r"'zzz', 'qqq' are not in its vocabulary"),
    ("</s>", r"'</s>' \(the end of sequence\) is a special token, not text"),
    ("zzz </s>", r"'zzz' is not in its vocabulary; '</s>' \(the end of sequence\) is a special token"),
])
def test_an_answer_with_no_known_word_is_an_answer_error(no_forward, scene, answer, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        with pytest.raises(glimpse.AnswerError, match=f"holds no word the model knows.*{message}"):
            explain(no_forward, scene, answer=answer)


def test_the_tokenizers_own_end_of_sequence_text_is_no_answer(no_forward, scene):
    eos = no_forward.processor.tokenizer.eos_token
    with pytest.raises(glimpse.AnswerError, match="end of sequence"):
        explain(no_forward, scene, answer=eos)


def test_unknown_words_are_warned_about_by_name_and_noted(shipped, scene):
    with pytest.warns(InputWarning, match=r"the answer's word\(s\) 'zzz', 'qqq' are not in the model's vocabulary: "
                                          r"explained as its unknown token '<unk>'"):
        result = explain(shipped, scene, answer="the zzz circle is qqq red zzz")
    assert result.answer == "the circle is red"  # the unknown tokens are explained, not shown
    assert len(result.answer_token_ids) == 7
    assert any("'zzz', 'qqq'" in note for note in result.notes)


def test_unknown_question_words_are_named_with_the_shipped_models_four_questions(shipped, scene):
    with pytest.warns(InputWarning, match=r"the question's word\(s\) 'What', 'man', 'holding' are not in the model's "
                                          r"vocabulary: it reads them as its unknown token '<unk>'") as caught:
        result = explain(shipped, scene, "What is the man holding?")
    message = str(caught[0].message)
    assert all(f'"{form}"' in message for form in world.QUESTION_FORMS) and "circle" in message and "purple" in message
    assert message in result.notes


def test_a_question_in_the_models_words_is_not_warned_about(shipped, scene):
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        explain(shipped, scene)  # scene.question: one of the four forms


def test_the_demos_help_shows_the_four_questions():
    from cli_runs import run

    shown = " ".join(run("demo", "--help", cwd=".").stdout.split())
    assert all(f'"{form}"' in shown for form in world.QUESTION_FORMS)


def test_words_the_tokenizer_drops_are_warned_about_by_name(shipped, scene):
    from tokenizers import normalizers

    tokenizer = copy.deepcopy(shipped.processor.tokenizer)
    tokenizer.backend_tokenizer.normalizer = normalizers.Replace("~", "")  # "~~~" becomes no token at all
    processor = copy.copy(shipped.processor)
    processor.tokenizer = tokenizer
    with pytest.warns(InputWarning, match=r"'~~~' become no token of the model's: left out of the explained answer"):
        result = glimpse.explain(shipped.model, processor, scene.image, scene.question, answer="the ~~~ circle",
                                 method=CHEAP)
    assert result.answer == "the circle"


def test_an_explained_part_with_no_known_word_is_an_answer_error(no_forward, scene):
    with pytest.warns(InputWarning, match="'zzz'"), pytest.raises(glimpse.AnswerError,
                                                                   match="give a larger max_answer_tokens"):
        explain(no_forward, scene, answer="zzz the circle", max_answer_tokens=1)


def test_a_byte_level_tokenizer_knows_every_word(tiny_llava):
    model, processor = tiny_llava
    with warnings.catch_warnings():
        warnings.simplefilter("error", glimpse.GlimpseWarning)
        result = glimpse.explain(model, processor, rand_image(64, 48), "what color is the object?",
                                 answer=" zzq xqj", method=CHEAP)
    assert result.notes == []


# --- image placeholders --------------------------------------------------------------------------

@pytest.mark.parametrize("where, error", [("prompt", glimpse.PromptError), ("system prompt", glimpse.PromptError),
                                          ("answer", glimpse.AnswerError)])
def test_the_image_placeholder_typed_in_is_refused_as_such(no_forward, scene, where, error):
    text = "<image> what color is the circle ?"
    call = {"prompt": {"prompt": text}, "system prompt": {"system_prompt": text},
            "answer": {"answer": "the <image> circle"}}[where]
    with pytest.raises(error, match=f"the {where} contains '<image>', the model's image placeholder: remove it from "
                                    f"the {where}; glimpse puts the image"):
        explain(no_forward, scene, **call)


def _family(name):
    import tiny_families_gemma
    import tiny_families_mllama
    import tiny_families_qwen
    import tiny_families_tiles

    return {"qwen2_vl": lambda: tiny_families_qwen.build("qwen2_vl"), "mllama": tiny_families_mllama.build,
            "gemma3": lambda: tiny_families_gemma.build("gemma3"),
            "idefics3": lambda: tiny_families_tiles.build("idefics3")}[name]()


@pytest.mark.parametrize("family, placeholder", [("qwen2_vl", "<|image_pad|>"), ("mllama", "<|image|>"),
                                                 ("gemma3", "<start_of_image>"),
                                                 ("idefics3", "<fake_token_around_image>")])
def test_each_familys_placeholder_is_found(family, placeholder, monkeypatch):
    model, processor = _family(family)
    assert adapter_for(model, processor).context_length() == model.config.text_config.max_position_embeddings

    def forward(*args, **kwargs):
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr(model, "forward", forward)
    with pytest.raises(glimpse.PromptError, match=f"contains '{__import__('re').escape(placeholder)}'"):
        glimpse.explain(model, processor, rand_image(64, 48), f"what is {placeholder} here?", answer=" red",
                        method=CHEAP)
