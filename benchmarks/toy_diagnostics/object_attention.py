"""Attention mass on the asked-about object vs the other objects, per layer and head, at the positions that predict
the answer words, teacher-forced on the true answer, split by whether the model's top word there is right.

Positions: the answer word of type 1 (colour) and 2 (shape); for type 3 both quadrant words (`top`/`bottom`, then
`left`/`right`). Questions from held-out scenes with at least MIN_OBJECTS objects, N per type.

    python benchmarks/toy_diagnostics/object_attention.py MODEL_FOLDER [--types 1 2 3] [--n 60] [--min-objects 2]
"""
import argparse
from collections import defaultdict

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from glimpse.toy import train, world
from glimpse.toy.bench import HELDOUT_SEED
from glimpse.toy.model import prompt

torch.set_num_threads(1)
parser = argparse.ArgumentParser()
parser.add_argument("folder")
parser.add_argument("--types", type=int, nargs="+", default=[1, 2, 3])
parser.add_argument("--n", type=int, default=60)
parser.add_argument("--min-objects", type=int, default=2)
args = parser.parse_args()
proc = AutoProcessor.from_pretrained(args.folder)
m = AutoModelForImageTextToText.from_pretrained(args.folder, attn_implementation="eager").eval()
image_id = proc.tokenizer.convert_tokens_to_ids("<image>")
# positions counted from the end of "<answer ids>": ... word . -> the word is predicted 3 from the end
WORDS = {1: {"colour": 3}, 2: {"shape": 3}, 3: {"top/bottom": 4, "left/right": 3}}
found = defaultdict(list)  # (type, word, correct) -> [layers x 2 x heads]
heldout = world.make_dataset(3000, HELDOUT_SEED)
for q in args.types:
    samples = [s for s in heldout if s.qtype == q and len(s.objects) >= args.min_objects][:args.n]
    for s in samples:
        inp = proc(images=s.image, text=prompt(proc, s.question) + " " + s.answer, return_tensors="pt")
        with torch.no_grad():
            out = m(**inp, output_attentions=True)
        ids = inp["input_ids"][0]
        img = (ids == image_id).nonzero().flatten()
        owner = train.patch_labels(world.Scene(s.image, s.objects, s.segmentation))[:, 4]
        for word, back in WORDS[q].items():
            pos = len(ids) - back
            correct = out.logits[0, pos].argmax().item() == ids[pos + 1].item()
            rows = []
            for a in out.attentions:
                w = a[0, :, pos, img].numpy()  # heads x image tokens
                rows.append([w[:, owner == s.target].sum(-1), w[:, (owner >= 0) & (owner != s.target)].sum(-1)])
            found[q, word, correct].append(np.array(rows))
for (q, word, correct), v in sorted(found.items()):
    v = np.mean(v, 0)
    print(f"type {q}, position predicting {word}, {'right' if correct else 'wrong'} ({len(found[q, word, correct])}):"
          " asked-about object / other objects, per layer and head")
    for layer, (t, o) in enumerate(v):
        print(f"  layer {layer}", " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(t, o)))
