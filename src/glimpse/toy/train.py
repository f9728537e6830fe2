"""Train the toy LLaVA from scratch on the shapes world (deterministic, resumable).

Recipe (measurements in docs/toy.md):

1. *Dense stage* (the role CLIP pre-training plays): the vision tower alone, with a per-patch linear head on its last
   layer (the features the projector reads), learns each patch's shape, colour and object-centre quadrant
   (background is a class of its own) plus the scene's object count. The answer loss alone never teaches the tower
   shapes or positions.
2. *Answer stage*: the tower is frozen; the projector and the language model learn from conversations of up to
   ``turns`` questions about one image (loss on answer tokens and ``</s>`` only). The first question is drawn as in
   the benchmark; each later one asks about an object no earlier turn named, so the text never gives an answer
   away. With ``freeze_tower=False`` the tower trains too, with the dense loss kept as an auxiliary term.

The recipe can also run as two commands, the tower first (``--answer-steps 0``) and then the answer stage on it
(``--dense-steps 0 --init-tower RUN/model``): the weights are the same as one run's (tested).

Determinism and resuming: batch ``b`` of step ``s`` of stage ``k`` is drawn from
``default_rng([TRAIN_TAG, seed, k, s, b])`` (never the benchmark's ``default_rng([HELDOUT_SEED, i])`` stream), so
the data position is just the step counter. A checkpoint (model, dense head, optimizer, scheduler, torch RNG, stage,
step) is written atomically every ``ckpt_every_s`` seconds; re-running the same command resumes from it and ends
with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForImageTextToText

from glimpse.errors import TrainingError
from glimpse.toy import model as toy_model
from glimpse.toy import world
from glimpse.toy.recipe import TrainConfig

TRAIN_TAG = 7_001  # first entry of every training seed sequence; the benchmark never uses it
N_SHAPE, N_COLOR, N_QUAD, N_COUNT = len(world.SHAPES) + 1, len(world.COLORS) + 1, 5, 4
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
MIN_PATCH_PIXELS = 32  # a patch belongs to an object if at least 1/8 of its pixels are that object's

log = logging.getLogger("glimpse.toy.train")


class DenseHead(nn.Module):
    """Per-patch classifier on the tower's last hidden layer (training only; not part of the shipped model)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, N_SHAPE + N_COLOR + N_QUAD + N_COUNT)

    def forward(self, patches: torch.Tensor) -> list[torch.Tensor]:
        return list(self.proj(self.norm(patches)).split([N_SHAPE, N_COLOR, N_QUAD, N_COUNT], dim=-1))


def init_positions(model: nn.Module) -> None:
    """Start the tower's (learned) position embeddings at a 2-D sin-cos code of the patch's row and column.

    With CLIP's default init (std 0.02, ~25x smaller than the patch embeddings) the tower ignored position: the
    object-centre quadrant head stayed at chance for 200 steps (probe p2)."""
    emb = model.model.vision_tower.embeddings.position_embedding.weight
    quarter = emb.shape[1] // 4
    freq = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    rows, cols = torch.meshgrid(torch.arange(toy_model.GRID), torch.arange(toy_model.GRID), indexing="ij")
    code = [f(x.reshape(-1, 1).float() * freq) for x in (rows, cols) for f in (torch.sin, torch.cos)]
    with torch.no_grad():
        emb.zero_()
        emb[1:, :4 * quarter] = torch.cat(code, dim=1)  # row 0 is the CLS token's


def grow(model: nn.Module, trained: nn.Module) -> None:
    """Load ``trained`` into ``model``, whose language model may have more layers: those start as no-ops (zero
    attention and MLP output projections, so each adds nothing to the residual stream) and ``model`` answers
    exactly as ``trained`` until training moves them."""
    wrong = TrainingError("init_model must be a model of the same configuration with fewer language layers")
    try:
        missing, unexpected = model.load_state_dict(trained.state_dict(), strict=False)
    except RuntimeError as error:  # a tensor of another shape
        raise wrong from error
    have = len(trained.model.language_model.layers)
    fresh = tuple(f"model.language_model.layers.{i}." for i in range(have, len(model.model.language_model.layers)))
    if unexpected or not fresh or any(not k.startswith(fresh) for k in missing):
        raise wrong
    with torch.no_grad():
        for layer in model.model.language_model.layers[have:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()


def pixel_values(images: list) -> torch.Tensor:
    """What the processor's image processor produces for a 224 x 224 image (resize/crop are identities), without
    its per-image overhead."""
    ip = _PROCESSOR.image_processor
    x = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    x = (x - np.asarray(ip.image_mean, dtype=np.float32)) / np.asarray(ip.image_std, dtype=np.float32)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def patch_labels(scene: world.Scene) -> np.ndarray:
    """(196, 5) int64 targets per patch, row-major: shape, colour, centre quadrant (0 = background), count - 1,
    owning object's index (-1 = background)."""
    g, p = toy_model.GRID, toy_model.PATCH
    counts = np.stack([(scene.segmentation == i).reshape(g, p, g, p).sum((1, 3)) for i in range(len(scene.objects))])
    owner = np.where(counts.max(0) >= MIN_PATCH_PIXELS, counts.argmax(0), -1).reshape(-1)
    labels = np.zeros((g * g, 5), dtype=np.int64)
    labels[:, 3] = len(scene.objects) - 1
    labels[:, 4] = owner
    for k, i in enumerate(owner):
        if i >= 0:
            o = scene.objects[i]
            labels[k, :3] = (world.SHAPES.index(o.shape) + 1, list(world.COLORS).index(o.color) + 1,
                             QUADRANTS.index(o.quadrant) + 1)
    return labels


def dense_loss(head: DenseHead, patches: torch.Tensor, labels: torch.Tensor,
               pooled_weight: float) -> tuple[torch.Tensor, list[float]]:
    """Per-patch cross-entropies (shape, colour, quadrant, count) plus ``pooled_weight`` x an object-level shape
    cross-entropy on the shape logits averaged over each object's patches; returns the loss and accuracies
    (per patch on object patches: shape, colour, quadrant; count on all patches; pooled shape per object).

    Objectness is learnt by the colour head (background is a colour class). Shape and quadrant are scored on object
    patches only: with ~80% background patches, a background class drowned their gradient (shape and quadrant
    stayed at chance in probe p1)."""
    logits = head(patches)
    obj = labels[..., 0] > 0
    losses, accs = [], []
    for j, lg in enumerate(logits):
        keep = obj if j in (0, 2) else torch.ones_like(obj)
        losses.append(nn.functional.cross_entropy(lg[keep].float(), labels[..., j][keep]))
        accs.append((lg.argmax(-1) == labels[..., j])[obj if j < 3 else keep].float().mean().item())
    # An object's shape is a property of its whole outline: averaging evidence over its patches is what the
    # language model's attention can do, so ask the tower for evidence that is right on average.
    member = (labels[..., 4:5] == torch.arange(4)).float()  # (B, 196, 4 objects)
    size = member.sum(1)
    pooled = torch.einsum("bpo,bpc->boc", member, logits[0].float()) / size.clamp(min=1).unsqueeze(-1)
    target = (member * labels[..., 0:1]).amax(1).long()
    real = size > 0
    losses_total = sum(losses) / len(losses)
    if pooled_weight:
        losses_total = losses_total + pooled_weight * nn.functional.cross_entropy(pooled[real], target[real])
    accs.append((pooled.argmax(-1) == target)[real].float().mean().item())
    return losses_total, accs


@lru_cache(maxsize=4096)
def _ids(text: str, specials: bool = False) -> tuple[int, ...]:
    return tuple(_TOKENIZER(text, add_special_tokens=specials).input_ids)


_PROCESSOR = toy_model.build_processor()
_TOKENIZER = _PROCESSOR.tokenizer


def conversation(turns: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside answers) of a multi-turn chat (question, answer) about one image.

    Identical to tokenising the chat template's rendering of the conversation (tested), but built piecewise so the
    answer spans are known.
    """
    image = "<image>" * toy_model.GRID ** 2
    ids = list(_ids(f"USER: {image}\n{turns[0][0]} ASSISTANT:", True))
    labels = [-100] * len(ids)
    for i, (question, answer_text) in enumerate(turns):
        if i:
            turn = _ids(f"USER: {question} ASSISTANT:")
            ids += turn
            labels += [-100] * len(turn)
        answer = list(_ids(" " + answer_text)) + [_TOKENIZER.eos_token_id]
        ids += answer
        labels += answer
    return ids, labels


def _rng(seed: int, stage: int, step: int, b: int) -> np.random.Generator:
    return np.random.default_rng([TRAIN_TAG, seed, stage, step, b])


def dense_batch(seed: int, step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    scenes = [world.make_scene(_rng(seed, 0, step, b)) for b in range(n)]
    return pixel_values([s.image for s in scenes]), torch.from_numpy(np.stack([patch_labels(s) for s in scenes]))


def later_turns(scene: world.Scene, first: world.Sample, turns: int,
                rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """Up to ``turns - 1`` further (type, question, answer) about ``scene``, each about an object no earlier turn
    named, so the text never gives an answer away (``what shape is the green object?`` after ``the green square is
    at ...`` would be answerable from the words alone). Types 1-3 only: counting is learnt from first turns."""
    used = {first.target}
    out = []
    for _ in range(turns - 1):
        options = {q: [t for t in world.askable(scene.objects, q) if t not in used] for q in (1, 2, 3)}
        types = [q for q, targets in options.items() if targets]
        if not types:
            break
        q = types[int(rng.integers(len(types)))]
        t = options[q][int(rng.integers(len(options[q])))]
        used.add(t)
        out.append((q, *world.question_answer(scene.objects, q, t)))
    return out


def answer_batch(seed: int, step: int, n: int, turns: int) -> dict[str, torch.Tensor]:
    """``n`` conversations; the first question's type is uniform (as in the benchmark), later ones about objects
    not named before (:func:`later_turns`)."""
    convs, images, dense, qtypes = [], [], [], []
    for b in range(n):
        rng = _rng(seed, 1, step, b)
        first = world.make_sample(rng)
        scene = world.Scene(first.image, first.objects, first.segmentation)
        chat = [(first.qtype, first.question, first.answer)] + later_turns(scene, first, turns, rng)
        convs.append(conversation([(q, a) for _, q, a in chat]))
        images.append(first.image)
        dense.append(patch_labels(scene))
        qtypes.append([t for t, _, _ in chat])
    width = max(len(ids) for ids, _ in convs)
    pad = _TOKENIZER.pad_token_id
    ids = torch.full((n, width), pad, dtype=torch.long)  # right padding: training only
    labels = torch.full((n, width), -100, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for b, (i, l) in enumerate(convs):
        ids[b, :len(i)], labels[b, :len(l)], mask[b, :len(i)] = torch.tensor(i), torch.tensor(l), 1
    return dict(input_ids=ids, labels=labels, attention_mask=mask, pixel_values=pixel_values(images),
                dense=torch.from_numpy(np.stack(dense)), qtypes=qtypes)


def turn_accuracy(logits: torch.Tensor, labels: torch.Tensor, qtypes: list[list[int]]) -> dict[int, list[int]]:
    """Teacher-forced exact match per answer turn (all answer tokens argmax-correct), grouped by question type."""
    pred, gold = logits[:, :-1].argmax(-1), labels[:, 1:]
    out: dict[int, list[int]] = {q: [] for q in world.QTYPES}
    for b, types in enumerate(qtypes):
        pos = (gold[b] != -100).nonzero().flatten().tolist()
        # answer spans are contiguous runs of labelled positions, one per turn
        spans = np.split(np.array(pos), np.nonzero(np.diff(pos) > 1)[0] + 1)
        for q, span in zip(types, spans):
            out[q].append(int((pred[b, span] == gold[b, span]).all()))
    return out


class _Steps(torch.utils.data.Dataset):
    """Batches ``start .. total-1`` of a stage; a batch depends only on its step, so any worker order is exact."""

    def __init__(self, make: Callable[[int], object], start: int, total: int) -> None:
        self.make, self.start, self.total = make, start, total

    def __len__(self) -> int:
        return self.total - self.start

    def __getitem__(self, i: int) -> object:
        return self.make(self.start + i)


def _schedule(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def _optimizer(cfg: TrainConfig, stage: int, model: nn.Module, head: DenseHead):
    tower = list(model.model.vision_tower.parameters()) + list(head.parameters())
    if stage == 0:
        groups = [{"params": tower, "lr": cfg.dense_lr}]
        total = cfg.dense_steps
    else:
        ids = {id(p) for p in tower}
        rest = [p for p in model.parameters() if id(p) not in ids]
        groups = [{"params": rest, "lr": cfg.lr}]
        if not cfg.freeze_tower:
            groups.append({"params": tower, "lr": cfg.vision_lr})
        total = cfg.answer_steps
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.warmup, total))


def _identity(cfg: TrainConfig) -> dict:
    """The settings a checkpoint must match to be resumed: all that can change the weights. How often to
    checkpoint, the data processes and (tower frozen) the answer stage's threads only change the speed."""
    d = dataclasses.asdict(cfg)
    for key in ("ckpt_every_s", "workers") + (("answer_threads",) if cfg.freeze_tower else ()):
        del d[key]
    return d


def _save_ckpt(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: an interrupted write never leaves a broken checkpoint


def _load_ckpt(path: Path) -> dict:
    """A checkpoint `_save_ckpt` wrote: tensors and plain data only, so a crafted file runs no code."""
    import pickle

    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"{path} is not a checkpoint of this trainer ({first}); move it away to train afresh") from None


def train(out_dir: str | Path, seed: int = 0, cfg: TrainConfig | None = None,
          stop_after: int | None = None) -> Path:
    """Train (or resume) into ``out_dir``; returns the final model folder ``out_dir/model``.

    ``stop_after``: checkpoint and return after that many optimizer steps in this call (simulates an interruption).
    """
    cfg = cfg or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Process-wide torch settings for the run, given back afterwards (training is also called as a library).
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    handler = logging.FileHandler(out / "train.log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return _train(out, seed, cfg, stop_after)
    finally:
        log.removeHandler(handler)
        handler.close()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(out: Path, seed: int, cfg: TrainConfig, stop_after: int | None) -> Path:
    model, processor = toy_model.build_untrained(seed, cfg.dims)
    init_positions(model)
    if cfg.init_tower:
        tower = AutoModelForImageTextToText.from_pretrained(cfg.init_tower).model.vision_tower
        model.model.vision_tower.load_state_dict(tower.state_dict())
    if cfg.init_model:
        grow(model, AutoModelForImageTextToText.from_pretrained(cfg.init_model))
    torch.manual_seed(seed)
    head = DenseHead(cfg.dims.vision_width)
    ckpt_path = out / "ckpt.pt"
    stage, step = 0, 0
    opt, sched = _optimizer(cfg, 0, model, head)
    if ckpt_path.exists():
        ck = _load_ckpt(ckpt_path)
        if ck["config"] != _identity(cfg) or ck["seed"] != seed:
            raise TrainingError(f"{ckpt_path} was written with another recipe; train into a fresh run folder")
        model.load_state_dict(ck["model"])
        head.load_state_dict(ck["head"])
        stage, step = ck["stage"], ck["step"]
        opt, sched = _optimizer(cfg, stage, model, head)
        if ck["opt"] is not None:
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["rng"])
        log.info("resumed at stage %d step %d", stage, step)
    else:
        (out / "config.json").write_text(json.dumps({"seed": seed, **dataclasses.asdict(cfg)}, indent=1))

    def checkpoint(next_stage: int, next_step: int, fresh_optimizer: bool = False) -> None:
        _save_ckpt(ckpt_path, dict(config=_identity(cfg), seed=seed, model=model.state_dict(),
                                   head=head.state_dict(), stage=next_stage, step=next_step,
                                   opt=None if fresh_optimizer else opt.state_dict(),
                                   sched=None if fresh_optimizer else sched.state_dict(),
                                   rng=torch.get_rng_state()))

    features: list[torch.Tensor] = []
    # The projector reads hidden_states[-1]; the hook hands the same tensor to the dense head (no second forward).
    model.model.vision_tower.register_forward_hook(lambda m, a, o: features.append(o.last_hidden_state))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16)
    model.train()
    done, last_ckpt, window = 0, time.monotonic(), []
    totals = (cfg.dense_steps, cfg.answer_steps)
    while stage < len(totals):
        frozen = stage == 1 and cfg.freeze_tower
        model.model.vision_tower.requires_grad_(not frozen)  # frozen: autograd skips the tower entirely
        torch.set_num_threads(cfg.answer_threads if stage else cfg.dense_threads)
        if step == totals[stage]:  # stage finished: next stage starts with a fresh optimizer and schedule
            stage, step = stage + 1, 0
            opt, sched = _optimizer(cfg, stage, model, head)
            checkpoint(stage, 0, fresh_optimizer=True)
            continue
        make = (partial(dense_batch, seed, n=cfg.dense_batch) if stage == 0 else
                partial(answer_batch, seed, n=cfg.batch, turns=cfg.turns))
        loader = torch.utils.data.DataLoader(_Steps(make, step, totals[stage]), batch_size=None,
                                             num_workers=cfg.workers, prefetch_factor=4 if cfg.workers else None)
        t0 = time.monotonic()
        for batch in loader:
            features.clear()
            with autocast:
                if stage == 0:
                    pix, labels = batch
                    model.model.vision_tower(pixel_values=pix)
                    loss, accs = dense_loss(head, features[0][:, 1:], labels, cfg.pooled_weight)
                    stats = dict(loss=loss.item(), shape=accs[0], color=accs[1], quad=accs[2], count=accs[3],
                                 oshape=accs[4])
                else:
                    res = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                pixel_values=batch["pixel_values"], labels=batch["labels"])
                    tf = turn_accuracy(res.logits, batch["labels"], batch["qtypes"])
                    stats = dict(loss=res.loss.item(),
                                 **{f"q{q}": float(np.mean(v)) if v else float("nan") for q, v in tf.items()})
                    loss = res.loss
                    if not frozen:
                        aux, accs = dense_loss(head, features[0][:, 1:], batch["dense"], cfg.pooled_weight)
                        loss = loss + cfg.aux_weight * aux
                        stats.update(aux=aux.item(), shape=accs[0], quad=accs[2], count=accs[3], oshape=accs[4])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
            opt.step()
            sched.step()
            step += 1
            done += 1
            window.append(dict(stats, sec=time.monotonic() - t0))  # wall time per step, data wait included
            t0 = time.monotonic()
            if step % 20 == 0 or step == totals[stage]:
                # per-type accuracies are NaN in windows without that type
                avg = {key: np.mean([w[key] for w in window if not math.isnan(w[key])] or [math.nan])
                       for key in window[0]}
                log.info("stage %d step %d/%d %s", stage, step, totals[stage],
                         " ".join(f"{a}={v:.3f}" for a, v in avg.items()))
                window = []
            stopping = stop_after is not None and done >= stop_after
            if stopping or time.monotonic() - last_ckpt >= cfg.ckpt_every_s:
                checkpoint(stage, step)
                if stage == 1:
                    toy_model.save(model, processor, out / "latest")  # for evaluating the run while it trains
                last_ckpt = time.monotonic()
                log.info("checkpoint at stage %d step %d", stage, step)
            if stopping:
                return out / "model"
    model.eval()
    toy_model.save(model, processor, out / "model")
    log.info("done: %s", out / "model")
    return out / "model"
