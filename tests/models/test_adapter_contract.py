"""The adapter contract, checked for every family: one FAMILIES entry per family (or variant).

A new family joins by adding its entry (docs/adding-a-family.md); the checks are in contract_checks.py,
the pixel ground truths there and in mllama_checks.py. Family files keep only what is specific to a family.
"""
from __future__ import annotations

from functools import cache, partial

import pytest
from contract_checks import (
    ANSWER,
    Family,
    check_answer,
    check_black_pixels,
    check_capabilities,
    check_image_tokens,
    check_question,
    coordinate_images,
    flat_truth,
    frame_truth,
)
from family_checks import check_explains_each_image, logit_pixel_gradient, prepare
from mllama_checks import vision_key_truth

import glimpse
import tiny_families_aya
import tiny_families_gemma
import tiny_families_mllama
import tiny_families_qwen
import tiny_families_tiles
from glimpse.models import Adapter, adapter_for, register_adapter, unregister_adapter
from glimpse.models.llava import LlavaAdapter
from tiny_models import build_tiny_llava, rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched

QWEN = dict(truth=flat_truth, prompts=(((120, 60), (50, 90)), ((30, 30), (300, 250)), ((200, 40), (41, 77))),
            around=("<|vision_end|>", "<|im_end|>\n<|im_start|>assistant\n"))
NEXT_SIZES = (((100, 60), (30, 90)), ((57, 57), (130, 41)), ((20, 75), (84, 28)), ((200, 120), (90, 160)))
IDEFICS_SIZES = (((100, 60), (30, 90), (57, 57)), ((130, 41), (20, 75)))
PALIGEMMA_SIZES = (((100, 60),), ((30, 90), (57, 57)), ((130, 41), (20, 75), (64, 48)))
GEMMA3_SIZES = (((100, 60), (30, 90)), ((57, 57), (130, 20)), ((50, 44), (41, 130), (101, 20)))

FAMILIES = {
    "llava": Family(partial(build_tiny_llava, seed=1), cell=14, around=("\n", " ASSISTANT:"),
                    prompts=(((64, 48), (48, 64)), ((40, 90), (90, 40)), ((56, 56), (56, 56)))),
    "llava-next": Family(partial(tiny_families_tiles.build, "llava_next"), NEXT_SIZES, frame_truth, 7, 0.5),
    "llava-onevision": Family(partial(tiny_families_tiles.build, "llava_onevision"), NEXT_SIZES, frame_truth, 7, 0.5),
    "llava-onevision-downsampled": Family(partial(tiny_families_tiles.build, "llava_onevision", aspect="anyres_max_1"),
                                          NEXT_SIZES, frame_truth, 7, 0.5),
    "idefics3": Family(partial(tiny_families_tiles.build, "idefics3"), IDEFICS_SIZES, frame_truth, 8),
    "smolvlm": Family(partial(tiny_families_tiles.build, "smolvlm"), IDEFICS_SIZES, frame_truth, 8),
    "qwen2-vl": Family(partial(tiny_families_qwen.build, "qwen2_vl", 1), **QWEN),
    "qwen2.5-vl": Family(partial(tiny_families_qwen.build, "qwen2_5_vl", 1), **QWEN),
    "qwen3-vl": Family(partial(tiny_families_qwen.build, "qwen3_vl", 1), **QWEN),
    "qwen3.5": Family(partial(tiny_families_qwen.build, "qwen3_5", 1), **QWEN),
    "internvl": Family(partial(tiny_families_qwen.build, "internvl", 1), cell=16,
                       prompts=(((120, 60), (50, 90)), ((30, 30), (300, 250)), ((200, 40), (41, 130))),
                       around=("</img>\n", "<|im_end|>\n<|im_start|>assistant\n")),
    "paligemma": Family(partial(tiny_families_gemma.build, "paligemma"), PALIGEMMA_SIZES, frame_truth, 8,
                        around=(None, "\n")),
    "paligemma2": Family(partial(tiny_families_gemma.build, "paligemma2"), PALIGEMMA_SIZES[:1], frame_truth, 8),
    "gemma3": Family(partial(tiny_families_gemma.build, "gemma3"), GEMMA3_SIZES, frame_truth, 16,
                     around=(None, "<end_of_turn>\n<start_of_turn>model\n")),
    "gemma3-pan-and-scan": Family(partial(tiny_families_gemma.build, "gemma3", pan_and_scan=True), GEMMA3_SIZES,
                                  frame_truth, 16),
    "mllama": Family(partial(tiny_families_mllama.build, 1), cell=7, truth=vision_key_truth,
                     prompts=(((64, 40), (30, 90)), ((20, 50), (150, 60)), ((100, 100), (41, 77))),
                     around=(None, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")),
    "aya-vision": Family(tiny_families_aya.build, cell=8, truth=frame_truth,
                         prompts=(((100, 60), (30, 30)), ((200, 40), (41, 130)))),
}
NAMES = list(FAMILIES)
PROMPTS = [(name, k) for name, family in FAMILIES.items() for k in range(len(family.prompts))]


@cache
def tiny(name: str):
    return FAMILIES[name].build()


@cache
def prepared(name: str, prompt: int):
    images = coordinate_images(FAMILIES[name].prompts[prompt])
    return (*prepare(*tiny(name), images, answer=ANSWER), images)


@pytest.mark.parametrize("name,prompt", PROMPTS)
def test_every_token_sees_its_cell(name, prompt):
    adapter, inputs, layout, images = prepared(name, prompt)
    FAMILIES[name].truth(adapter, inputs, layout, images, FAMILIES[name])


@pytest.mark.parametrize("name,prompt", PROMPTS)
def test_image_tokens_are_the_pixel_dependent_positions(name, prompt):
    adapter, inputs, layout, images = prepared(name, prompt)
    check_image_tokens(adapter, inputs, layout, images)


@pytest.mark.parametrize("name", NAMES)
def test_question_is_located_without_system_prompt_or_template(name):
    check_question(*tiny(name), FAMILIES[name])


@pytest.mark.parametrize("name", NAMES)
def test_answer_is_the_end_of_the_sequence(name):
    adapter, inputs, layout, _ = prepared(name, 0)
    check_answer(adapter, inputs, layout)


@pytest.mark.parametrize("name", NAMES)
def test_declared_capabilities_match_behaviour(name):
    adapter, inputs, layout, _ = prepared(name, 0)
    check_capabilities(adapter, inputs, layout)


@pytest.mark.parametrize("name", NAMES)
def test_black_pixels_are_what_the_processor_makes_of_a_black_image(name):
    adapter, _, _, images = prepared(name, 0)
    check_black_pixels(adapter, images)


@pytest.mark.parametrize("name", NAMES)
def test_answer_logit_reaches_every_token_block(name):
    """d logit / d pixel_values != 0 on the block of every image token (through the full model)."""
    model, processor = tiny(name)
    grad = logit_pixel_gradient(model, processor)
    adapter, inputs, layout = prepare(model, processor, [rand_image(120, 60, seed=3)])  # logit_pixel_gradient's
    reached = [bool(grad[block].abs().sum() > 0) for block in adapter.token_pixel_blocks(inputs, layout)]
    assert all(reached)


@pytest.mark.parametrize("name", NAMES)
def test_explains_each_image(name):
    check_explains_each_image(*tiny(name))


# --- the contract itself ------------------------------------------------------------------------------------

def test_an_adapter_without_image_layouts_cannot_be_instantiated(tiny_llava):
    class NoLayouts(Adapter):
        family, architectures = "none", ("LlavaForConditionalGeneration",)

    with pytest.raises(TypeError, match="image_layouts"):
        NoLayouts(*tiny_llava)
    with pytest.raises(glimpse.UnsupportedModelError, match="image_layouts"):
        register_adapter(NoLayouts)


@pytest.mark.parametrize("capability,hooks", [("pixel_blocks", "token_patches, token_pixel_blocks"),
                                              ("cross_attention_images", "cross_attention_layers"),
                                              ("prefix_lm", "bidirectional_pairs")])
def test_a_capability_needs_its_hook(capability, hooks):
    with pytest.raises(TypeError, match=f"{capability} = True but overrides none of {hooks}"):
        type("Claims", (Adapter,), {capability: True, "image_layouts": lambda self, inputs, images: []})


def test_registering_refuses_what_is_no_adapter():
    with pytest.raises(glimpse.UnsupportedModelError, match="not a glimpse Adapter"):
        register_adapter(dict)
    with pytest.raises(glimpse.UnsupportedModelError, match="architectures"):
        register_adapter(type("Nameless", (LlavaAdapter,), {"architectures": ()}))
    with pytest.raises(glimpse.UnsupportedModelError, match="not a registered adapter"):
        unregister_adapter(type("Unknown", (LlavaAdapter,), {}))


@pytest.fixture
def my_llava():
    """A user's LLaVA adapter, registered for the test and taken out afterwards."""
    cls = register_adapter(type("MyLlava", (LlavaAdapter,), {"family": "my-llava"}))
    yield cls
    unregister_adapter(cls)


def test_a_registered_adapter_takes_precedence_over_the_builtin(tiny_llava, my_llava):
    assert type(adapter_for(*tiny_llava)) is my_llava


def test_unregistering_gives_the_architecture_back_to_the_builtin(tiny_llava):
    unregister_adapter(register_adapter(type("Passing", (LlavaAdapter,), {"family": "passing"})))
    assert type(adapter_for(*tiny_llava)) is LlavaAdapter


def test_pixel_blocks_of_an_adapter_without_them_is_a_clear_error(tiny_llava):
    _, inputs, layout = prepare(*tiny_llava, [rand_image(64, 48)])
    blind = type("Blind", (LlavaAdapter,), {"pixel_blocks": False})(*tiny_llava)
    with pytest.raises(glimpse.MethodError, match="does not map image tokens to pixel blocks"):
        blind.token_pixel_blocks(inputs, layout)
