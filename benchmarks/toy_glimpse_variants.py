"""GLIMPSE options on the shipped shapes-world model: pointing game and energy in mask over the type 1-3
questions of 200 held-out scenes (the first variant generates the answer; the others explain the same answer).

    python benchmarks/toy_glimpse_variants.py   # prints: questions, then per variant [pointing, energy]
"""
import numpy as np, glimpse
from glimpse.toy import world
from glimpse.toy.bench import HELDOUT_SEED
from glimpse.eval import pointing_game, energy_in_mask
m, p = glimpse.load(None, device="cpu")
variants = {"glimpse": {}, "auto": {"depth_scale": "auto"}, "sinks": {"exclude_sinks": True},
            "last_half": {"layer_fraction": 0.5}, "confidence": {"token_weighting": "confidence"}}
scores = {k: [] for k in variants}
samples = [s for s in world.make_dataset(200, HELDOUT_SEED) if s.qtype in (1, 2, 3)]
for s in samples:
    answer = None
    for name, opts in variants.items():
        e = glimpse.explain(m, p, s.image, s.question, answer=answer, max_new_tokens=12, **opts)
        answer = e.answer
        scores[name].append((pointing_game(e, s.mask), energy_in_mask(e, s.mask)))
print(len(samples))
for k, v in scores.items():
    a = np.array(v, dtype=float); print(k, a.mean(0).round(3))
