"""Per answer token of correctly answered held-out questions of one type: pointing game and energy in mask of
GLIMPSE's token map, the token's weight beta^V in the holistic map, and the map's mass; and the holistic map.
(Token 1 and 5 are shown as <w>: the words that vary between questions.)

    python benchmarks/toy_diagnostics/token_maps.py MODEL_FOLDER QTYPE
"""
import collections
import sys

import numpy as np
import torch

torch.set_num_threads(1)
import glimpse
from glimpse.eval import energy_in_mask, pointing_game
from glimpse.toy import world
from glimpse.toy.bench import HELDOUT_SEED

m, p = glimpse.load(sys.argv[1], device="cpu")
qtype = int(sys.argv[2])
stats = collections.defaultdict(list)
for s in [s for s in world.make_dataset(150, HELDOUT_SEED) if s.qtype == qtype]:
    e = glimpse.explain(m, p, s.image, s.question, max_new_tokens=12)
    if e.answer != s.answer: continue
    for k, tok in enumerate(e.answer_tokens):
        key = f"{k}:{tok.strip() if k not in (1, 5) else '<w>'}"
        stats[key].append((pointing_game(e, s.mask, token=k), energy_in_mask(e, s.mask, token=k),
                           float(e.token_weights[k]), float(e.image_scores(0, k).sum())))
    stats["holistic"].append((pointing_game(e, s.mask), energy_in_mask(e, s.mask), 1.0, float(e.image_scores(0).sum())))
for k, v in stats.items():
    a = np.array(v); print(f"{k:12s} n={len(a)} pointing={a[:,0].mean():.2f} energy={a[:,1].mean():.2f} betaV={a[:,2].mean():.3f} mass={a[:,3].mean():.4f}")
