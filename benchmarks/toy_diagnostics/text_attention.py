"""Mean attention over the text tokens, top 3 per layer and head, at the position that predicts the answer word
(20 held-out questions of one type).

    python benchmarks/toy_diagnostics/text_attention.py MODEL_FOLDER QTYPE
"""
import sys

import numpy as np
import torch

torch.set_num_threads(1)
from transformers import AutoModelForImageTextToText, AutoProcessor

from glimpse.toy import world
from glimpse.toy.model import prompt

folder, qtype = sys.argv[1], int(sys.argv[2])
proc = AutoProcessor.from_pretrained(folder)
m = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager").eval()
samples = [s for s in world.make_dataset(200, 424242) if s.qtype == qtype][:20]
tot = None
for s in samples:
    inp = proc(images=s.image, text=prompt(proc, s.question) + " " + s.answer, return_tensors="pt")
    with torch.no_grad():
        out = m(**inp, output_attentions=True)
    ids = inp["input_ids"][0]; pos = len(ids) - 3
    toks = proc.tokenizer.convert_ids_to_tokens(ids)
    text = [i for i, t in enumerate(toks) if t != "<image>"]
    a = np.stack([o[0, :, pos, text].numpy() for o in out.attentions])  # L x H x text
    tot = a if tot is None else tot + a
print([toks[i] for i in text], "query:", toks[pos])
for l, layer in enumerate(tot / len(samples)):
    for h, row in enumerate(layer):
        top = np.argsort(row)[::-1][:3]
        print(l, h, " ".join(f"{toks[text[i]]}@{text[i]}:{row[i]:.2f}" for i in top))
