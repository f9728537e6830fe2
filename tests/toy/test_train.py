from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

import glimpse
from bad_inputs import write_crafted_checkpoint
from glimpse.toy import bench, train, world
from glimpse.toy.model import Dims, prompt

TINY = train.TrainConfig(dims=Dims(vision_width=32, vision_layers=1, vision_heads=2, text_width=32, text_layers=1,
                                   text_heads=2, text_mlp=64),
                         dense_steps=2, answer_steps=3, dense_batch=2, batch=2, turns=2, warmup=2, ckpt_every_s=1e9)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_is_deterministic(tmp_path: Path) -> None:
    a = _weights(train.train(tmp_path / "a", seed=1, cfg=TINY))
    b = _weights(train.train(tmp_path / "b", seed=1, cfg=TINY))
    assert _same(a, b)
    untrained = _weights(train.train(tmp_path / "c", seed=1, cfg=train.TrainConfig(
        dims=TINY.dims, dense_steps=0, answer_steps=0)))
    assert not _same(a, untrained)  # the steps did change the weights


@pytest.mark.parametrize("freeze_tower", [True, False])
def test_resume_equals_uninterrupted(tmp_path: Path, freeze_tower: bool) -> None:
    cfg = replace(TINY, freeze_tower=freeze_tower)
    full = _weights(train.train(tmp_path / "full", seed=2, cfg=cfg))
    # interrupt inside the dense stage, at the stage boundary and inside the answer stage
    for stop in (1, 1, 2):
        train.train(tmp_path / "resumed", seed=2, cfg=cfg, stop_after=stop)
    resumed = _weights(train.train(tmp_path / "resumed", seed=2, cfg=cfg))
    assert _same(full, resumed)


def test_dense_loss_is_minimal_for_perfect_logits() -> None:
    scenes = [world.make_scene(train._rng(0, 0, 0, b)) for b in range(2)]
    labels = torch.from_numpy(np.stack([train.patch_labels(s) for s in scenes]))
    sizes = (train.N_SHAPE, train.N_COLOR, train.N_QUAD, train.N_COUNT)
    perfect = torch.cat([20 * torch.nn.functional.one_hot(labels[..., j], n) for j, n in enumerate(sizes)], -1).float()

    class Identity(torch.nn.Module):
        def forward(self, x):
            return list(x.split(sizes, -1))

    loss, accs = train.dense_loss(Identity(), perfect, labels, pooled_weight=1.0)
    assert loss.item() < 1e-6 and accs == [1.0] * 5


def test_training_data_never_uses_the_benchmark_stream() -> None:
    rng = train._rng(0, 1, 0, 0)
    assert rng.bit_generator.seed_seq.entropy[0] == train.TRAIN_TAG != bench.HELDOUT_SEED


def _targets(objects: list, qtype: int, question: str) -> set[int]:
    return {t for t in range(len(objects)) if world.question_answer(objects, qtype, t)[0] == question}


def test_later_turns_ask_about_objects_no_earlier_turn_named() -> None:
    seen_later = 0
    for i in range(200):
        rng = np.random.default_rng([1, i])
        first = world.make_sample(rng)
        scene = world.Scene(first.image, first.objects, first.segmentation)
        later = train.later_turns(scene, first, 4, rng)
        named = {first.target} if first.target is not None else set()
        for qtype, question, answer in later:
            (target,) = _targets(scene.objects, qtype, question)  # a unique referent, as in first turns
            assert target not in named and qtype in (1, 2, 3)
            assert world.question_answer(scene.objects, qtype, target)[1] == answer
            named.add(target)
        if len(later) < 3:  # it stops early only when every askable object has been named
            assert all(set(world.askable(scene.objects, q)) <= named for q in (1, 2, 3))
        seen_later += len(later)
    assert seen_later > 150  # most scenes have a second object to ask about


def test_frozen_tower_is_left_unchanged_and_initialised_from_a_folder(tmp_path: Path) -> None:
    donor = train.train(tmp_path / "donor", seed=1, cfg=TINY)
    cfg = replace(TINY, dense_steps=0, freeze_tower=True, init_tower=str(donor))
    out = train.train(tmp_path / "frozen", seed=0, cfg=cfg)
    before, after = _weights(donor), _weights(out)
    tower = [k for k in before if k.startswith("vision_tower.")]
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("language_model."))


def test_tower_stage_then_answer_stage_equals_one_run(tmp_path: Path) -> None:
    """The recipe can run as one command or as two (tower first, then the answer stage on that tower): same weights."""
    cfg = replace(TINY, freeze_tower=True)
    whole = train.train(tmp_path / "whole", seed=0, cfg=cfg)
    tower = train.train(tmp_path / "tower", seed=0, cfg=replace(cfg, answer_steps=0))
    split = train.train(tmp_path / "answer", seed=0,
                        cfg=replace(cfg, dense_steps=0, init_tower=str(tower)))
    assert _same(_weights(whole), _weights(split))


def test_frozen_tower_answer_stage_is_the_same_with_one_or_two_threads(tmp_path: Path) -> None:
    cfg = replace(TINY, freeze_tower=True, answer_steps=4)
    original = torch.get_num_threads()
    torch.set_num_threads(1)  # the run below ends on 2: the caller's setting must come back
    try:
        one = _weights(train.train(tmp_path / "one", seed=3, cfg=replace(cfg, answer_threads=1)))
        two = _weights(train.train(tmp_path / "two", seed=3, cfg=replace(cfg, answer_threads=2)))
        assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (1, False)
    finally:
        torch.set_num_threads(original)
    assert _same(one, two)


def test_a_run_resumes_with_other_speed_settings_but_not_other_weight_settings(tmp_path: Path) -> None:
    cfg = replace(TINY, freeze_tower=True, answer_threads=1, workers=1)
    full = _weights(train.train(tmp_path / "full", seed=4, cfg=cfg))
    train.train(tmp_path / "resumed", seed=4, cfg=cfg, stop_after=3)
    faster = replace(cfg, answer_threads=2, workers=0, ckpt_every_s=60.0)
    assert _same(full, _weights(train.train(tmp_path / "resumed", seed=4, cfg=faster)))
    train.train(tmp_path / "other", seed=4, cfg=cfg, stop_after=1)
    for changed in (replace(cfg, lr=2e-3), replace(cfg, dense_threads=2)):
        with pytest.raises(glimpse.TrainingError, match="another recipe"):
            train.train(tmp_path / "other", seed=4, cfg=changed)


def test_a_deeper_model_grown_from_a_trained_one_answers_like_it_until_trained(tmp_path: Path) -> None:
    donor = train.train(tmp_path / "donor", seed=1, cfg=TINY)
    deeper = replace(TINY, dims=replace(TINY.dims, text_layers=2), dense_steps=0, init_model=str(donor))
    start = _weights(train.train(tmp_path / "start", seed=0, cfg=replace(deeper, answer_steps=0)))
    before = _weights(donor)
    assert all(torch.equal(before[k], start[k]) for k in before)
    new = [k for k in start if k.startswith("language_model.model.layers.1.")]
    outputs = [k for k in new if k.endswith(("o_proj.weight", "down_proj.weight"))]
    assert len(outputs) == 2 and all(start[k].abs().sum() == 0 for k in outputs)
    model, processor = AutoModelForImageTextToText.from_pretrained(donor), AutoProcessor.from_pretrained(donor)
    grown = AutoModelForImageTextToText.from_pretrained(tmp_path / "start" / "model")
    sample = world.make_dataset(1, 9)[0]
    inputs = processor(images=sample.image, text=prompt(processor, sample.question), return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, grown(**inputs).logits)
    trained = _weights(train.train(tmp_path / "trained", seed=0, cfg=deeper))
    assert any(not torch.equal(start[k], trained[k]) for k in new)
    for other in (replace(deeper.dims, text_width=64), TINY.dims):  # another shape; not deeper
        with pytest.raises(glimpse.TrainingError, match="fewer language layers"):
            train.train(tmp_path / "other", seed=0, cfg=replace(deeper, dims=other))


def test_a_crafted_checkpoint_runs_no_code_and_is_refused_in_words(tmp_path: Path) -> None:
    planted = write_crafted_checkpoint(tmp_path)
    with pytest.raises(glimpse.TrainingError, match="is not a checkpoint of this trainer"):
        train.train(tmp_path / "crafted", seed=1, cfg=TINY)
    assert not planted.exists()
