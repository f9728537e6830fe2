"""The result of an explanation: maps, scores and weights, with save/load and rendering.

On disk (`save(folder)`), an explanation is `explanation.json` (schema in docs/explanation-format.md,
versioned by `schema_version`), `arrays.safetensors` (every array, float32) and the original images
as lossless `image_<i>.png`; `figures=True` adds `overlay.png` (one per image) and `report.html`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from safetensors.numpy import load_file
from safetensors.numpy import save as safetensors_bytes

from . import maps
from .errors import ExplanationError, GlimpseError
from .folders import staged_folder
from .layout import ImageLayout
from .saved import SCHEMA_VERSION, CheckedArrays, check_document, damaged, inside_folder, json_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The core every method fills, saved under these names in arrays.safetensors.
ARRAYS = ("token_visual", "visual", "token_prompt", "prompt", "token_weights", "probs", "ranking")
DETAILS_PREFIX = "details."


@dataclass(eq=False)
class Explanation:
    """An explained answer (schema version 2: docs/explanation-format.md).

    The core, the same for every method (numpy float32): `token_visual` [T, V] and `visual` [V]
    hold image-token scores of all images in layout order (see `visual_map`); `token_prompt`
    [T, P] and `prompt` [P] the question's token scores; `token_weights` [T] the weight each answer
    token carries in the holistic visual map; `probs` [T] each answer token's probability;
    `ranking` [T] the score by which the method ranks answer tokens for display (`ranking_by` says
    what it is; `top_tokens` uses it); `explained`, the quantity the scores explain ("logit",
    "log_prob" or "attention"). `details` is the method's own section (e.g. GLIMPSE's `alpha`,
    `gamma`), with `details_doc` giving each value's meaning; `notes` the fallbacks it took; `cost`
    the method run's seconds and peak working memory (`glimpse.resources.measured`).
    """

    question: str
    answer: str
    answer_tokens: list[str]
    answer_token_ids: list[int]
    answer_generated: bool
    prompt_words: list[str]
    word_of_token: list[int]
    images: list[Image.Image]
    layouts: list[ImageLayout]
    token_visual: np.ndarray
    visual: np.ndarray
    token_prompt: np.ndarray
    prompt: np.ndarray
    token_weights: np.ndarray
    probs: np.ndarray
    ranking: np.ndarray
    layers: list[int]
    method: str
    params: dict[str, Any]
    model_id: str
    version: str
    model_revision: str | None = None
    explained: str = "logit"
    ranking_by: str = ""
    details: dict[str, np.ndarray] = field(default_factory=dict)
    details_doc: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)
    question_located: bool = True
    approximate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def top_tokens(self, k: int = 3) -> list[int]:
        """The `k` highest-ranked answer tokens (by `ranking`), in answer order."""
        order = sorted(range(len(self.ranking)), key=lambda t: (-float(self.ranking[t]), t))
        return sorted(order[:k])

    # --- scores -------------------------------------------------------------------------------
    @property
    def prompt_word_scores(self) -> np.ndarray:
        """Holistic score of each prompt word: the sum over its sub-word tokens."""
        return self._words(self.prompt)

    def token_prompt_word_scores(self, token: int) -> np.ndarray:
        """Answer token `token`'s score of each prompt word."""
        return self._words(self.token_prompt[self._check_token(token)])

    def _words(self, token_scores: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.prompt_words), dtype=np.float32)
        np.add.at(out, np.asarray(self.word_of_token, dtype=np.int64), token_scores)
        return out

    # --- maps ---------------------------------------------------------------------------------
    def image_scores(self, image: int = 0, token: int | None = None) -> np.ndarray:
        """Scores of one image's tokens in layout order (holistic, or answer token `token`)."""
        self._check_image(image)
        start = sum(len(l.positions) for l in self.layouts[:image])
        stop = start + len(self.layouts[image].positions)
        source = self.visual if token is None else self.token_visual[self._check_token(token)]
        return source[start:stop]

    def visual_map(self, image: int = 0, token: int | None = None, resolution: str = "image") -> np.ndarray:
        """Raw (unnormalised) map of one image, holistic or for answer token `token`.

        resolution="image": (height, width) over the ORIGINAL image, with the processor's resize,
        crop and padding inverted. resolution="grid": the token grid (rows, cols), for images
        encoded as a single grid; use `tile_maps` for tiled images.
        """
        scores = self.image_scores(image, token)
        layout = self.layouts[image]
        if resolution == "image":
            return maps.to_image(layout, scores)
        if resolution == "grid":
            grids = maps.tile_grids(layout, scores)
            if len(grids) != 1:
                raise GlimpseError(f"image {image} has {len(grids)} tiles; use tile_maps() for its grids")
            return grids[0]
        raise GlimpseError(f"resolution must be 'image' or 'grid', got {resolution!r}")

    def tile_maps(self, image: int = 0, token: int | None = None) -> list[np.ndarray]:
        return maps.tile_grids(self.layouts[image], self.image_scores(image, token))

    def _check_token(self, token: int) -> int:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < len(self.answer_tokens):
            raise GlimpseError(f"answer token {token!r} out of range: this answer has {len(self.answer_tokens)} "
                               f"token(s), 0 to {len(self.answer_tokens) - 1}")
        return int(token)

    def _check_image(self, image: int) -> None:
        if not 0 <= image < len(self.layouts):
            raise GlimpseError(f"image index {image} out of range: this explanation has {len(self.layouts)} image(s)")

    # --- rendering ------------------------------------------------------------------------------
    def to_png(self, path: str | Path | None = None, image: int = 0, token: int | None = None) -> Image.Image:
        """The normalised map over the original image, with a colour bar beneath (`render.with_colour_bar`);
        written to `path` if given. `render.overlay` gives the map picture alone."""
        from .render import with_colour_bar
        picture = with_colour_bar(self, image, token)
        if path is not None:
            picture.save(path)
        return picture

    def to_html(self, path: str | Path | None = None) -> str:
        """One standalone HTML report (no external assets); written to `path` if given."""
        from .render import report
        html = report(self)
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html

    def figure(self, image: int = 0, tokens: list[int] | None = None, top: int = 3, filmstrip: bool = True,
               colormap: str = "inferno", normalisation: str = "minmax", percentile: float = 99.0) -> Figure:
        """A plain matplotlib figure for a paper (no pyplot state; `.savefig` writes PNG, PDF or SVG):
        the image, the holistic map with a colour bar, a filmstrip of answer tokens' own maps and the
        question's words and answer's tokens shaded by their scores and weights. `tokens` picks the
        filmstrip's tokens (default: `top_tokens(top)`, the method's own ranking; `filmstrip=False`:
        none). Every map is drawn in `colormap` (a matplotlib name), normalised on its own:
        `normalisation="minmax"`, or "percentile" (clipped at its `percentile`-th percentile, so that
        one outlier does not wash out the rest); the colour bar says which."""
        from .figures import figure
        self._check_image(image)
        chosen = self.top_tokens(top) if tokens is None else [self._check_token(t) for t in tokens]
        return figure(self, image, chosen if filmstrip else [], colormap=colormap, normalisation=normalisation,
                      percentile=percentile)

    def _repr_html_(self) -> str:
        from .render import report
        return report(self, standalone=False)

    # --- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "glimpse.explanation", "schema_version": SCHEMA_VERSION, "glimpse_version": self.version,
            "model_id": self.model_id, "model_revision": self.model_revision, "method": self.method, "params": self.params,
            "approximate": self.approximate,
            "explained": self.explained, "ranking_by": self.ranking_by,
            "question": self.question, "question_located": self.question_located,
            "prompt_words": self.prompt_words, "word_of_token": self.word_of_token,
            "answer": self.answer, "answer_tokens": self.answer_tokens, "answer_token_ids": self.answer_token_ids,
            "answer_generated": self.answer_generated, "layers": self.layers,
            "images": [{"file": f"image_{i}.png", "layout": l.to_dict()} for i, l in enumerate(self.layouts)],
            "arrays": "arrays.safetensors",
            "details": {name: self.details_doc.get(name, "") for name in self.details},
            "notes": self.notes, "cost": self.cost, "extra": self.extra,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array, float32, under its name in arrays.safetensors (details prefixed "details.")."""
        arrays = {name: getattr(self, name) for name in ARRAYS}
        arrays.update({DETAILS_PREFIX + name: value for name, value in self.details.items()})
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}

    def save(self, folder: str | Path, figures: bool = True, overwrite: bool = False) -> Path:
        """Write the explanation to `folder` (created, with its parents, where it is absent), at once:
        explanation.json, arrays.safetensors and the images, and with `figures` overlay.png (the whole
        answer's map with its colour bar), tokens.png (every answer token's map, `summary.filmstrip`)
        and report.html; further images' pictures are overlay_1.png, tokens_1.png, ... Every file is
        written into a temporary sibling folder that then takes the folder's place (`staged_folder`),
        so an error or an interruption leaves no half-written folder. A folder that already holds
        files is an `OutputError` unless `overwrite`: then the explanation's files replace their
        namesakes and the others stay."""
        with staged_folder(folder, overwrite) as staging:
            # As bytes, so the file takes the user's umask like the others (save_file writes it 0600).
            (staging / "arrays.safetensors").write_bytes(safetensors_bytes(self.arrays()))
            for i, picture in enumerate(self.images):
                # Fast zlib: a 48-megapixel photograph encodes in 5 s instead of 33 s, for 15% more bytes.
                picture.save(staging / f"image_{i}.png", compress_level=1)
            (staging / "explanation.json").write_text(json_text(self.to_dict()), encoding="utf-8")
            if figures:
                from .summary import filmstrip
                for i in range(len(self.images)):
                    suffix = "" if i == 0 else f"_{i}"
                    self.to_png(staging / f"overlay{suffix}.png", image=i)
                    filmstrip(self, i).save(staging / f"tokens{suffix}.png")
                self.to_html(staging / "report.html")
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> Explanation:
        """Read a saved explanation (schema version 2, or 1 from glimpse 0.1.0, converted). The document
        and the arrays are checked first (`from_document`), and every file the document names must lie
        inside `folder`: a damaged or tampered folder is one `ExplanationError` naming the field."""
        folder = Path(folder)
        path = folder / "explanation.json"
        if not path.is_file():
            raise ExplanationError(f"no explanation.json in {folder}")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise damaged(folder, "explanation.json", f"is not valid JSON ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise damaged(folder, "explanation.json", f"cannot be read ({exc})") from None
        check_document(doc, folder)
        images = []
        for i, item in enumerate(doc["images"]):
            name = f"images[{i}].file"
            file = inside_folder(folder, item["file"], name)
            layout = item["layout"]
            try:
                with Image.open(file) as picture:
                    if picture.size != (layout["width"], layout["height"]):
                        raise damaged(folder, name, f"is a {picture.width} x {picture.height} image, but its layout is "
                                                     f"{layout['width']} x {layout['height']}")
                    images.append(picture.convert("RGB"))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise damaged(folder, name, f"{item['file']!r} is not a readable image ({exc})") from None
        file = inside_folder(folder, doc["arrays"], "arrays")
        try:
            arrays = load_file(str(file))
        except Exception as exc:  # safetensors raises its own SafetensorError as well as OSError
            raise damaged(folder, "arrays", f"{doc['arrays']!r} is not a readable safetensors file ({exc})") from None
        return cls.from_document(doc, arrays, images, source=folder)

    @classmethod
    def from_document(cls, doc: dict[str, Any], arrays: dict[str, np.ndarray], images: list[Image.Image], *,
                      source: str | Path = "the given document") -> Explanation:
        """An explanation from its `to_dict()` document (schema version 1 or 2), its arrays and its images.
        The document's fields and the arrays' names, types and shapes are checked first: a problem is an
        `ExplanationError` naming the field and `source` (the folder it came from)."""
        sizes = check_document(doc, source)
        convert = _fields_v2 if doc["schema_version"] == 2 else from_version_1
        fields = convert(doc, CheckedArrays(arrays, sizes, source))
        return cls(
            question=doc["question"], answer=doc["answer"], answer_tokens=doc["answer_tokens"],
            answer_token_ids=doc["answer_token_ids"], answer_generated=doc["answer_generated"],
            prompt_words=doc["prompt_words"], word_of_token=doc["word_of_token"], images=images,
            layouts=[ImageLayout.from_dict(item["layout"]) for item in doc["images"]], layers=doc["layers"],
            method=doc["method"], params=doc["params"], model_id=doc["model_id"], version=doc["glimpse_version"],
            model_revision=doc.get("model_revision"), question_located=doc["question_located"],
            approximate=doc["approximate"], extra=doc["extra"], **fields)


def _fields_v2(doc: dict[str, Any], arrays: CheckedArrays) -> dict[str, Any]:
    return {**{name: arrays.core(name) for name in ARRAYS}, "explained": doc["explained"], "ranking_by": doc["ranking_by"],
            "details": {name: arrays.get(DETAILS_PREFIX + name) for name in doc["details"]},
            "details_doc": dict(doc["details"]), "notes": list(doc["notes"]), "cost": dict(doc["cost"])}


def from_version_1(doc: dict[str, Any], arrays: CheckedArrays | dict[str, np.ndarray]) -> dict[str, Any]:
    """The version 2 fields of a version 1 file. Version 1 made every method fill GLIMPSE's
    beta_visual, beta_prompt and gamma: beta_visual is the holistic map's token weight of every
    method (`token_weights`); only GLIMPSE's own results keep beta_prompt, gamma and alpha, in its
    section, and rank tokens by gamma as before. What the scores explain is the method's own."""
    from .methods import Method, list_methods
    from .methods.base import positive_contribution

    if not isinstance(arrays, CheckedArrays):  # called with the plain arrays of a document: checked as from_document does
        arrays = CheckedArrays(arrays, check_document(doc), "the given document")
    method = list_methods().get(doc["method"])
    weights = arrays.core("beta_visual", "token_weights")
    token_visual = arrays.core("token_visual")
    own = method is not None and {"beta_prompt", "gamma"} <= set(method.details)
    # alpha is [T, len(layers)]; beta_prompt and gamma are [T], like token_weights.
    details = {name: arrays.get(name) if name == "alpha" else arrays.core(name, "token_weights")
               for name in ("alpha", "beta_prompt", "gamma") if own and name in arrays}
    if own:
        ranking, ranking_by = arrays.core("gamma", "ranking"), method.token_ranking
    else:
        ranking = positive_contribution(weights, token_visual)
        ranking_by = (method or Method).token_ranking
    return {"token_visual": token_visual, "visual": arrays.core("visual"), "token_prompt": arrays.core("token_prompt"),
            "prompt": arrays.core("prompt"), "token_weights": weights, "probs": arrays.core("probs"),
            "ranking": ranking.astype(np.float32), "ranking_by": ranking_by,
            "explained": method.explains if method is not None else "logit", "details": details,
            "details_doc": {name: method.details[name] for name in details},
            "notes": ["read from a schema version 1 file (glimpse 0.1.0) and converted to version 2"]}
