"""The "shapes world": synthetic scenes with questions, answers and ground-truth evidence masks.

Distribution (every draw uses one ``numpy.random.Generator``, so a seed fixes a sample exactly):

* Image: 224 x 224 RGB uint8. Background: one grey level ``g ~ U{30..70}`` on all channels. Objects are painted
  flat in their colour, then gaussian noise (sigma 6, independent per pixel and channel) is added to the whole
  image, which is clipped to 0..255.
* Objects: ``n ~ U{1..4}``. Each has a shape ~ U{circle, square, triangle, diamond, cross}, a colour ~
  U{red, green, blue, yellow, purple, white} (fixed RGB in :data:`COLORS`) and a square bounding box of side
  ``s ~ U{40..64}`` px whose top-left corner is uniform over the positions where it fits. Bounding boxes are
  pairwise at least :data:`GAP` px apart (rejection sampling; the scene is re-drawn if placement fails).
* Question: the type is drawn uniformly from 1..4; if the scene cannot support it (no unique shape / colour /
  colour-shape pair) the whole scene is re-drawn, so the four types are equally frequent.

  1. ``what color is the {shape}?`` -> ``the {shape} is {color}.`` (the shape is unique in the scene)
  2. ``what shape is the {color} object?`` -> ``the {color} object is a {shape}.`` (the colour is unique)
  3. ``where is the {color} {shape}?`` -> ``the {color} {shape} is at the {top|bottom} {left|right}.`` (the
     colour-shape pair is unique; quadrant of the bounding-box centre: left iff cx < 112, top iff cy < 112)
  4. ``how many objects are there?`` -> ``there is one object.`` / ``there are {two|three|four} objects.``

  For types 1-3 the target is drawn uniformly among the objects that can be asked about.
* Evidence mask (224 x 224 bool): the painted pixels of the asked-about object (types 1-3) or of all objects
  (type 4).

``make_dataset(n, seed)`` draws sample ``i`` from ``default_rng([seed, i])``, so any sample of a set can be
regenerated alone and sets with different seeds are independent streams.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .questions import QUESTION_FORMS

SIZE = 224
GAP = 4
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 220, 50),
    "purple": (160, 60, 200),
    "white": (240, 240, 240),
}
NUMBERS = ("one", "two", "three", "four")
QTYPES = (1, 2, 3, 4)
NOISE_SIGMA = 6.0


@dataclass(frozen=True)
class WorldObject:
    shape: str
    color: str
    x0: int  # bounding box: columns x0 .. x0+size-1, rows y0 .. y0+size-1
    y0: int
    size: int

    @property
    def center(self) -> tuple[float, float]:
        return self.x0 + self.size / 2, self.y0 + self.size / 2

    @property
    def quadrant(self) -> str:
        cx, cy = self.center
        return f"{'top' if cy < SIZE / 2 else 'bottom'} {'left' if cx < SIZE / 2 else 'right'}"


@dataclass
class Scene:
    image: Image.Image
    objects: list[WorldObject]
    segmentation: np.ndarray  # int8 (224, 224): index into ``objects`` of the painted pixel, -1 = background


@dataclass
class Sample:
    image: Image.Image
    question: str
    answer: str
    qtype: int
    mask: np.ndarray  # bool (224, 224): evidence pixels
    objects: list[WorldObject]
    target: int | None  # index of the asked-about object (None for counting)
    segmentation: np.ndarray


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Pixels of ``shape`` inside a ``size`` x ``size`` box (aliased, so the mask is exactly what is painted)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    e = size - 1
    if shape == "circle":
        draw.ellipse((0, 0, e, e), fill=1)
    elif shape == "square":
        draw.rectangle((0, 0, e, e), fill=1)
    elif shape == "triangle":
        draw.polygon([(e / 2, 0), (e, e), (0, e)], fill=1)
    elif shape == "diamond":
        draw.polygon([(e / 2, 0), (e, e / 2), (e / 2, e), (0, e / 2)], fill=1)
    elif shape == "cross":
        bar = size // 3
        lo = (size - bar) // 2
        draw.rectangle((lo, 0, lo + bar - 1, e), fill=1)
        draw.rectangle((0, lo, e, lo + bar - 1), fill=1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(canvas, dtype=bool)


def _apart(a: WorldObject, b: WorldObject) -> bool:
    """True if the two bounding boxes are separated by at least GAP pixels along x or along y."""
    return (a.x0 + a.size + GAP <= b.x0 or b.x0 + b.size + GAP <= a.x0
            or a.y0 + a.size + GAP <= b.y0 or b.y0 + b.size + GAP <= a.y0)


def _place_objects(rng: np.random.Generator, n: int) -> list[WorldObject] | None:
    objects: list[WorldObject] = []
    for _ in range(n):
        for _attempt in range(100):
            size = int(rng.integers(40, 65))
            obj = WorldObject(shape=SHAPES[rng.integers(len(SHAPES))], color=list(COLORS)[rng.integers(len(COLORS))],
                              x0=int(rng.integers(0, SIZE - size + 1)), y0=int(rng.integers(0, SIZE - size + 1)),
                              size=size)
            if all(_apart(obj, o) for o in objects):
                objects.append(obj)
                break
        else:
            return None
    return objects


def make_scene(rng: np.random.Generator) -> Scene:
    """Draw objects and paint the image (see module docstring for the distribution)."""
    while True:
        grey = int(rng.integers(30, 71))
        objects = _place_objects(rng, int(rng.integers(1, 5)))
        if objects is not None:
            break
    seg = np.full((SIZE, SIZE), -1, dtype=np.int8)
    pixels = np.full((SIZE, SIZE, 3), grey, dtype=np.float32)
    for i, o in enumerate(objects):
        m = shape_mask(o.shape, o.size)
        window = (slice(o.y0, o.y0 + o.size), slice(o.x0, o.x0 + o.size))
        seg[window][m] = i
        pixels[window][m] = COLORS[o.color]
    pixels += rng.normal(0.0, NOISE_SIGMA, size=pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return Scene(image=image, objects=objects, segmentation=seg)


def askable(objects: list[WorldObject], qtype: int) -> list[int]:
    """Indices of objects a question of ``qtype`` (1-3) may be about; for type 4 the list of all objects."""
    shapes = [o.shape for o in objects]
    colors = [o.color for o in objects]
    pairs = [(o.color, o.shape) for o in objects]
    keep = {1: lambda o: shapes.count(o.shape) == 1,
            2: lambda o: colors.count(o.color) == 1,
            3: lambda o: pairs.count((o.color, o.shape)) == 1,
            4: lambda o: True}[qtype]
    return [i for i, o in enumerate(objects) if keep(o)]


def question_answer(objects: list[WorldObject], qtype: int, target: int | None) -> tuple[str, str]:
    """The fixed wording of question ``qtype`` about ``objects[target]`` (target ignored for counting)."""
    if qtype == 4:
        n = len(objects)
        answer = "there is one object." if n == 1 else f"there are {NUMBERS[n - 1]} objects."
        return QUESTION_FORMS[3], answer
    assert target is not None
    o = objects[target]
    question = QUESTION_FORMS[qtype - 1].format(shape=o.shape, color=o.color)
    if qtype == 1:
        return question, f"the {o.shape} is {o.color}."
    if qtype == 2:
        return question, f"the {o.color} object is a {o.shape}."
    return question, f"the {o.color} {o.shape} is at the {o.quadrant}."


def scene_questions(scene: Scene) -> list[tuple[str, str]]:
    """Every question the world asks about `scene` (each type, each object it may be about), with its answer."""
    return [question_answer(scene.objects, qtype, target)
            for qtype in (1, 2, 3, 4) for target in (askable(scene.objects, qtype) if qtype < 4 else [None])]


def ask(scene: Scene, qtype: int, rng: np.random.Generator) -> Sample | None:
    """A question of ``qtype`` about ``scene``, or None if the scene cannot support it."""
    candidates = askable(scene.objects, qtype)
    if not candidates:
        return None
    target = None if qtype == 4 else candidates[int(rng.integers(len(candidates)))]
    question, answer = question_answer(scene.objects, qtype, target)
    mask = scene.segmentation >= 0 if target is None else scene.segmentation == target
    return Sample(image=scene.image, question=question, answer=answer, qtype=qtype, mask=mask,
                  objects=scene.objects, target=target, segmentation=scene.segmentation)


def make_sample(rng_or_seed: np.random.Generator | int | list[int]) -> Sample:
    """One scene plus one question; the type is uniform over 1..4 (scene re-drawn until the type is askable)."""
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)
    qtype = int(rng.integers(1, 5))
    while True:
        sample = ask(make_scene(rng), qtype, rng)
        if sample is not None:
            return sample


def make_dataset(n: int, seed: int) -> list[Sample]:
    """``n`` samples; sample ``i`` is ``make_sample(default_rng([seed, i]))``."""
    return [make_sample(np.random.default_rng([seed, i])) for i in range(n)]


def vocabulary() -> list[str]:
    """Every word (and punctuation mark) that any question or answer of the world can contain, sorted."""
    words = {"what", "color", "is", "the", "shape", "object", "a", "where", "at", "how", "many", "objects", "are",
             "there", "top", "bottom", "left", "right", "?", "."}
    words.update(SHAPES, COLORS, NUMBERS)
    return sorted(words)


# A scene pixel lies within this many levels (per channel) of its flat colour: 4 sigma of the noise.
SCENE_TOLERANCE = 4 * NOISE_SIGMA


def is_scene(image: Image.Image) -> bool:
    """Whether `image` looks like a shapes-world scene: 224 x 224, a grey background of level
    30..70 over most of it, and nearly every pixel within the noise of the background or of one
    of the world's colours. Photos, drawings and other synthetic images fail at least one of these."""
    if image.size != (SIZE, SIZE):
        return False
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    greyish = (np.ptp(pixels, axis=1) <= 2 * SCENE_TOLERANCE) & (pixels.mean(1) <= 70 + SCENE_TOLERANCE)
    if greyish.mean() < 0.5:
        return False
    grey = float(np.median(pixels[greyish].mean(1)))
    if not 30 - SCENE_TOLERANCE <= grey <= 70 + SCENE_TOLERANCE:
        return False
    palette = np.array([(grey, grey, grey), *COLORS.values()], dtype=np.float32)
    distance = np.abs(pixels[:, None, :] - palette[None]).max(-1).min(1)
    return float((distance <= SCENE_TOLERANCE).mean()) >= 0.98
