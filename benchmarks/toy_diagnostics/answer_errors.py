"""Held-out accuracy of a toy model by question type and object count, by asked-about colour/shape, and whether
wrong type 1-2 answers name another object's attribute.

    python benchmarks/toy_diagnostics/answer_errors.py MODEL_FOLDER [N]
"""
import collections
import sys

import numpy as np
import torch

torch.set_num_threads(1)
from transformers import AutoModelForImageTextToText, AutoProcessor

from glimpse.toy import world
from glimpse.toy.bench import HELDOUT_SEED, generate_answers

folder = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 400
proc = AutoProcessor.from_pretrained(folder); model = AutoModelForImageTextToText.from_pretrained(folder)
samples = world.make_dataset(n, HELDOUT_SEED)
res = collections.defaultdict(list); other = collections.Counter()
for s, a in zip(samples, generate_answers(model, proc, samples)):
    ok = a == s.answer
    res[(s.qtype, len(s.objects))].append(ok)
    if not ok and s.qtype in (1, 2):
        words = a.rstrip(".").split()
        attr = words[-1]
        others = {o.color if s.qtype == 1 else o.shape for j, o in enumerate(s.objects) if j != s.target}
        other[(s.qtype, "other-object" if attr in others else "absent")] += 1
    if s.qtype == 2:
        res[("t2colour", s.objects[s.target].color)].append(ok)
    if s.qtype == 1:
        res[("t1shape", s.objects[s.target].shape)].append(ok)
for k in sorted(res, key=str): print(k, len(res[k]), round(float(np.mean(res[k])), 3))
print(other)
