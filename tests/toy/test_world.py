from collections import Counter

import numpy as np
import pytest

from glimpse.toy import world

SAMPLES = world.make_dataset(120, seed=5)
TOL = 6 * 6  # six noise sigmas (about 10^5 draws per image)


def _apart(a: world.WorldObject, b: world.WorldObject) -> bool:
    gap_x = max(b.x0 - (a.x0 + a.size), a.x0 - (b.x0 + b.size))
    gap_y = max(b.y0 - (a.y0 + a.size), a.y0 - (b.y0 + b.size))
    return max(gap_x, gap_y) >= world.GAP


@pytest.mark.parametrize("s", SAMPLES[:40])
def test_masks_match_painted_pixels(s: world.Sample) -> None:
    px = np.asarray(s.image).astype(int)
    assert px.shape == (224, 224, 3)
    bg = s.segmentation < 0
    grey = np.median(px[bg])
    assert 30 - 2 <= grey <= 70 + 2
    assert np.abs(px[bg] - grey).max() <= TOL
    for i, o in enumerate(s.objects):
        obj = s.segmentation == i
        assert np.abs(px[obj] - np.array(world.COLORS[o.color])).max() <= TOL
        box = np.zeros_like(obj)
        box[o.y0:o.y0 + o.size, o.x0:o.x0 + o.size] = True
        assert not (obj & ~box).any()  # painted pixels stay inside the bounding box
        if (box & ~obj).any():  # a square fills its box
            assert np.abs(px[box & ~obj] - grey).max() <= TOL  # the rest of the box is background
        assert obj.sum() > 0.25 * o.size ** 2
    expected = s.segmentation >= 0 if s.qtype == 4 else s.segmentation == s.target
    assert s.mask.dtype == bool and (s.mask == expected).all() and s.mask.any()


@pytest.mark.parametrize("s", SAMPLES)
def test_scene_rules_and_answers(s: world.Sample) -> None:
    objs = s.objects
    assert 1 <= len(objs) <= 4
    for i, a in enumerate(objs):
        assert 40 <= a.size <= 64 and 0 <= a.x0 <= 224 - a.size and 0 <= a.y0 <= 224 - a.size
        assert all(_apart(a, b) for b in objs[i + 1:])
    if s.qtype == 4:
        n = len(objs)
        assert s.answer == ("there is one object." if n == 1 else f"there are {world.NUMBERS[n - 1]} objects.")
        return
    o = objs[s.target]
    if s.qtype == 1:
        assert [x.shape for x in objs].count(o.shape) == 1
        assert (s.question, s.answer) == (f"what color is the {o.shape}?", f"the {o.shape} is {o.color}.")
    elif s.qtype == 2:
        assert [x.color for x in objs].count(o.color) == 1
        assert (s.question, s.answer) == (f"what shape is the {o.color} object?", f"the {o.color} object is a {o.shape}.")
    else:
        assert [(x.color, x.shape) for x in objs].count((o.color, o.shape)) == 1
        cy, cx = np.argwhere(s.segmentation == s.target).mean(0)
        # the centre of mass of a drawn shape lies close to its box centre; far from the midlines it decides alone
        if abs(cx - 112) > 8 and abs(cy - 112) > 8:
            quad = f"{'top' if cy < 112 else 'bottom'} {'left' if cx < 112 else 'right'}"
            assert s.answer == f"the {o.color} {o.shape} is at the {quad}."
        assert s.answer.startswith(f"the {o.color} {o.shape} is at the ")
    assert s.question.islower() and s.answer.islower()


def test_same_seed_same_sample() -> None:
    a, b = world.make_sample(123), world.make_sample(123)
    assert (a.question, a.answer, a.objects) == (b.question, b.answer, b.objects)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and np.array_equal(a.mask, b.mask)
    assert world.make_dataset(3, 9)[2].answer == world.make_sample([9, 2]).answer


def test_question_types_balanced() -> None:
    counts = Counter(s.qtype for s in world.make_dataset(400, seed=11))
    assert set(counts) == {1, 2, 3, 4}
    assert all(60 <= c <= 140 for c in counts.values())


def test_vocabulary_covers_all_text() -> None:
    vocab = set(world.vocabulary())
    for s in SAMPLES:
        words = (s.question + " " + s.answer).replace("?", " ?").replace(".", " .").split()
        assert set(words) <= vocab
