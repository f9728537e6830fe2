"""What fusing GLIMPSE's first pass into the attention backward could save (streaming-design.md, point 1),
for one layer and one answer token at the benchmark model's geometry (8 heads x 64, N = 2,327, 2 threads).

sdpa's own backward of a causal attention, against the same gradients computed in row blocks from
A = exp(S - lse) and dA = dO V^T (the blocks GLIMPSE recomputes anyway): with dA over the causal keys only, and
over every key (GLIMPSE's head sums and layer evidence take every key column). Prints the gradients' largest
difference from sdpa's and the three times (median of five).

Also the least GLIMPSE adds to a layer whatever it is fused with: the two products it cannot do without,
Q K^T over the causal keys (to rebuild A) and dO V^T over every key, in row blocks, against sdpa's forward
plus backward of that layer (what `glimpse_fast`'s floor spends on the layer's attention).

    python benchmarks/attention_backward.py [--length N]    (results/attention-backward.txt: N = 2,327, 4,055, 8,087)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

HEADS, HEAD_DIM, BLOCK_ROWS = 8, 64, 128


def timed(work, runs: int = 5) -> float:
    work()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row_blocks(n: int) -> Iterator[slice]:
    for first in range(0, n, BLOCK_ROWS):
        yield slice(first, min(first + BLOCK_ROWS, n))


def blockwise_backward(q, k, v, out, grad, lse, scale: float, every_key: bool):
    """dQ, dK, dV of softmax(Q K^T * scale, causal) V for the output gradient `grad`, a block of rows at a time."""
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for rows in row_blocks(q.shape[1]):
        reach = rows.stop
        scores = torch.matmul(q[:, rows], k[:, :reach].transpose(1, 2)) * scale
        later = torch.arange(rows.start, reach)[None] > torch.arange(rows.start, rows.stop)[:, None]
        scores[..., rows.start:].masked_fill_(later, float("-inf"))
        attn = torch.exp(scores - lse[:, rows, None])
        grad_attn = torch.matmul(grad[:, rows], (v if every_key else v[:, :reach]).transpose(1, 2))
        ds = attn * (grad_attn[..., :reach] - (grad[:, rows] * out[:, rows]).sum(-1, keepdim=True))
        dq[:, rows] = torch.matmul(ds, k[:, :reach]) * scale
        dk[:, :reach] += torch.matmul(ds.transpose(1, 2), q[:, rows]) * scale
        dv[:, :reach] += torch.matmul(attn.transpose(1, 2), grad[:, rows])
    return dq, dk, dv


def required_products(q, k, v, grad) -> None:
    """Q K^T over the causal keys and dO V^T over every key, a block of rows at a time, nothing else."""
    for rows in row_blocks(q.shape[1]):
        torch.matmul(q[:, rows], k[:, : rows.stop].transpose(1, 2))
        torch.matmul(grad[:, rows], v.transpose(1, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=2327)
    n = parser.parse_args().length
    torch.set_num_threads(2)
    torch.manual_seed(0)
    scale = HEAD_DIM ** -0.5
    q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, HEADS, n, HEAD_DIM)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    reference = torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
    sdpa = timed(lambda: torch.autograd.grad(out, (q, k, v), grad, retain_graph=True))

    def forward_backward():
        torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), grad)
    sdpa_both = timed(forward_backward)
    with torch.no_grad():
        inputs = [x.detach()[0] for x in (q, k, v, out)] + [grad[0]]
        causal = torch.triu(torch.full((n, n), float("-inf")), 1)
        lse = torch.logsumexp(torch.matmul(inputs[0], inputs[1].transpose(1, 2)) * scale + causal, -1)
        mine = blockwise_backward(*inputs, lse, scale, every_key=False)
        causal_keys = timed(lambda: blockwise_backward(*inputs, lse, scale, every_key=False))
        every_key = timed(lambda: blockwise_backward(*inputs, lse, scale, every_key=True))
        products = timed(lambda: required_products(inputs[0], inputs[1], inputs[2], grad[0]))
    print("largest difference from sdpa's gradients:", max(float((a[0] - b).abs().max()) for a, b in zip(reference, mine)))
    print(f"N = {n}, one layer, one token: sdpa backward {sdpa:.3f} s; block-wise backward {causal_keys:.3f} s; "
          f"with dA over every key (GLIMPSE's) {every_key:.3f} s")
    print(f"sdpa forward + backward {sdpa_both:.3f} s; GLIMPSE's two products alone (Q K^T causal, dO V^T every key) "
          f"{products:.3f} s = {products / sdpa_both:.2f}x")


if __name__ == "__main__":
    main()
