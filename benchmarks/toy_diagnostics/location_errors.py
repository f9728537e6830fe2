"""Type-3 (location) errors of a toy model on the held-out set: which word is wrong (top/bottom or left/right),
by distance of the object centre to the nearest midline, by object count and by whether another object shares the
asked-about object's colour or shape (then only the conjunction of both words selects it).

    python benchmarks/toy_diagnostics/location_errors.py MODEL_FOLDER
"""
import sys

import numpy as np
import torch

torch.set_num_threads(1)
from transformers import AutoModelForImageTextToText, AutoProcessor

from glimpse.toy import world
from glimpse.toy.bench import HELDOUT_SEED, generate_answers

folder = sys.argv[1]
proc = AutoProcessor.from_pretrained(folder)
model = AutoModelForImageTextToText.from_pretrained(folder)
samples = [s for s in world.make_dataset(1000, HELDOUT_SEED) if s.qtype == 3]
rows = []
for s, a in zip(samples, generate_answers(model, proc, samples)):
    obj = s.objects[s.target]; cx, cy = obj.center
    pred = a.split(" at the ")[-1].rstrip(".") if " at the " in a else "?"
    true = obj.quadrant
    rows.append((a == s.answer, min(abs(cx - 112), abs(cy - 112)), pred.split()[0] != true.split()[0] if pred != "?" else True,
                 pred.split()[-1] != true.split()[-1] if pred != "?" else True, len(s.objects), a.split(" is at")[0] == s.answer.split(" is at")[0],
                 any(o.color == obj.color for o in s.objects if o is not obj),
                 any(o.shape == obj.shape for o in s.objects if o is not obj), abs(cx - 112)))
r = np.array(rows, dtype=float)
print("n", len(r), "acc", r[:, 0].mean(), "subject ok", r[:, 5].mean())
for lo, hi in [(0, 4), (4, 8), (8, 16), (16, 32), (32, 200)]:
    m = (r[:, 1] >= lo) & (r[:, 1] < hi)
    print(f"min distance of centre to a midline {lo}-{hi}px: n={m.sum()} acc={r[m, 0].mean():.3f} vert-wrong={r[m, 2].mean():.3f} horiz-wrong={r[m, 3].mean():.3f}")
for k in range(1, 5):
    m = r[:, 4] == k; print("objects", k, m.sum(), r[m, 0].mean().round(3))
for name, col in (("another object of the same colour", 6), ("another object of the same shape", 7)):
    for v in (1, 0):
        m = r[:, col] == v
        print(f"{name}: {'yes' if v else 'no'} n={m.sum()} acc={r[m, 0].mean():.3f} horiz-wrong={r[m, 3].mean():.3f}")
for lo, hi in [(0, 8), (8, 16), (16, 32), (32, 200)]:
    m = (r[:, 8] >= lo) & (r[:, 8] < hi)
    print(f"centre {lo}-{hi}px from the vertical midline: n={m.sum()} horiz-wrong={r[m, 3].mean():.3f}")
