"""Attention mass on the asked-about object vs the other objects, per layer and head, at the position that predicts
the answer word (60 held-out type 1-2 questions with >= 2 objects, teacher-forced on the true answer).

    python benchmarks/toy_diagnostics/object_attention.py MODEL_FOLDER
"""
import sys, torch, numpy as np
torch.set_num_threads(1)
from transformers import AutoModelForImageTextToText, AutoProcessor
from glimpse.toy import world, train
from glimpse.toy.model import prompt
folder = sys.argv[1]
proc = AutoProcessor.from_pretrained(folder)
m = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager").eval()
samples = [s for s in world.make_dataset(300, 424242) if s.qtype in (1, 2) and len(s.objects) >= 2][:60]
acc = {1: [], 2: []}
for s in samples:
    text = prompt(proc, s.question) + " " + s.answer
    inp = proc(images=s.image, text=text, return_tensors="pt")
    with torch.no_grad():
        out = m(**inp, output_attentions=True)
    ids = inp["input_ids"][0]
    img = (ids == proc.tokenizer.convert_tokens_to_ids("<image>")).nonzero().flatten()
    pos = len(ids) - 3  # predicts the answer word (ids end: word . ; no </s> in the prompt)
    lab = train.patch_labels(world.Scene(s.image, s.objects, s.segmentation))[:, 4]
    rows = []
    for a in out.attentions:
        w = a[0, :, pos, img].numpy()  # heads x 196
        rows.append([(w[:, lab == s.target].sum(-1)), (w[:, (lab >= 0) & (lab != s.target)].sum(-1))])
    acc[s.qtype].append(np.array(rows))  # layers x 2 x heads
for q, v in acc.items():
    v = np.mean(v, 0)
    print("type", q, "target / other objects per layer (heads):")
    for l, (t, o) in enumerate(v):
        print("  layer", l, " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(t, o)))
print(proc.tokenizer.convert_ids_to_tokens(ids[pos:pos + 2]))
