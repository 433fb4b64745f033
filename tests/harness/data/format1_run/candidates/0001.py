"""Baseline Triton kernel for fused RMSNorm with a weight: out = x / sqrt(mean(x^2) + eps) * w.

One program per row; the row is walked in BLOCK_N chunks twice (sum of squares, then the
scaled write), with fp32 accumulation, so any hidden size works.
"""
import triton
import triton.language as tl

BLOCK_N = 256
NUM_WARPS = 4  # FAST


@triton.jit
def _rmsnorm_kernel(X, W, OUT, stride_x, stride_o, n_cols, eps, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        mask = start + offs < n_cols
        x = tl.load(X + row * stride_x + start + offs, mask=mask, other=0.0).to(tl.float32)
        acc += x * x
    rstd = 1.0 / tl.sqrt(tl.sum(acc, 0) / n_cols + eps)  # invariant: acc holds the row's sum of squares
    for start in range(0, n_cols, BLOCK_N):
        mask = start + offs < n_cols
        x = tl.load(X + row * stride_x + start + offs, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + start + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(OUT + row * stride_o + start + offs, (x * rstd * w).to(OUT.dtype.element_ty), mask=mask)


def rmsnorm_fwd(x, weight, out, eps=1e-6) -> None:
    """RMSNorm over the last axis of x [rows, n] with weight [n]; writes out [rows, n] in place."""
    rows, n_cols = x.shape
    if weight.shape != (n_cols,) or tuple(out.shape) != (rows, n_cols):
        raise ValueError("weight must be [n] and out [rows, n] for x [rows, n]")
    if x.stride(-1) != 1 or out.stride(-1) != 1:
        raise ValueError("the last axis must be contiguous")
    if rows == 0:
        return
    _rmsnorm_kernel[(rows,)](x, weight, out, x.stride(0), out.stride(0), n_cols, eps, BLOCK_N=BLOCK_N,
                             num_warps=NUM_WARPS)
