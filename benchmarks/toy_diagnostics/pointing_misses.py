"""Where a method's holistic map puts its maximum when it misses the asked-about object (type 1-3 held-out
questions, the model's own answers): on another object or on the background, by question type and object count,
and how close the best token on the object came (its score over the map's maximum).

    python benchmarks/toy_diagnostics/pointing_misses.py MODEL_FOLDER [N_SCENES] [METHOD]
"""
import collections
import sys

import numpy as np
import torch

torch.set_num_threads(1)
import glimpse
from glimpse.eval.metrics import token_cells, touches
from glimpse.toy import world
from glimpse.toy.bench import HELDOUT_SEED

model, processor = glimpse.load(sys.argv[1], device="cpu")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
method = sys.argv[3] if len(sys.argv) > 3 else "glimpse"
where, closeness = collections.Counter(), collections.defaultdict(list)
for s in [s for s in world.make_dataset(n, HELDOUT_SEED) if s.qtype in (1, 2, 3)]:
    e = glimpse.explain(model, processor, s.image, s.question, max_new_tokens=12, method=method)
    scores, cells = np.asarray(e.image_scores(0)), token_cells(e.layouts[0])
    best = int(scores.argmax())
    if touches(s.mask, cells[best]):
        outcome = "hit"
    else:
        other = any(touches(s.segmentation == i, cells[best]) for i in range(len(s.objects)) if i != s.target)
        outcome = "other object" if other else "background"
        on_object = [k for k, c in enumerate(cells) if touches(s.mask, c)]
        closeness[outcome].append(scores[on_object].max() / scores.max())
    where[s.qtype, len(s.objects), outcome] += 1
print(f"{method} on {sys.argv[1]}: question type, objects in the scene, outcome: count")
for key in sorted(where):
    print(*key, where[key], sep="\t")
for outcome, v in closeness.items():
    print(f"misses on {outcome}: {len(v)}; best on-object token / map maximum: median {np.median(v):.2f}")
