"""Honest kernel: a genuinely different but correct structure (must pass with status "ok").

Differences from the baseline, each of which a verifier that over-fits to the baseline's
structure could wrongly reject:
- one merged key loop over the concatenated sequence prefix ++ extend (absolute key
  positions 0 .. P+E-1): a tile may straddle the prefix/extend boundary, its prefix columns
  gathered from the pool and its extend columns read from k_extend/v_extend;
- causality and the sliding window in absolute positions (key j visible to query t iff
  j <= P+t for causal extend keys and P+t <= j+W with a window), one rule for both parts;
- natural-log online softmax with tl.exp (the baseline uses exp2 and log2 units);
- grid ordered (Hq, B, m-tiles) instead of (B, Hq, m-tiles); 64x64 tiles (64x32 for D > 128);
- rows past the request's E are masked out of the softmax instead of computed and discarded.
Written from docs/extend_attention.md.
"""
import math
from typing import Optional

import torch
import triton
import triton.language as tl

BLOCK_M = 64
BLOCK_N = 64
BLOCK_M_LARGE_D = 64
BLOCK_N_LARGE_D = 32
NUM_WARPS = 4
NUM_STAGES = 1


@triton.jit
def _soft_cap(x, cap):
    # cap * tanh(x / cap) with a non-positive exponent: never overflows.
    y = x / cap
    e = tl.exp(-2.0 * tl.abs(y))
    t = (1.0 - e) / (1.0 + e)
    return cap * tl.where(y < 0, -t, t)


@triton.jit
def _merged_kernel(
    Q, K_ext, V_ext, O, K_buf, V_buf,
    qo_indptr, kv_indptr, kv_indices, custom_mask, mask_indptr,
    sm_scale, logit_cap, window,
    stride_qm, stride_qh, stride_kem, stride_keh, stride_vem, stride_veh,
    stride_om, stride_oh, stride_kbs, stride_kbh, stride_vbs, stride_vbh,
    KV_GROUP: tl.constexpr, LQ: tl.constexpr, LV: tl.constexpr,
    BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, USE_MASK: tl.constexpr, USE_CAP: tl.constexpr,
    USE_WINDOW: tl.constexpr, DOT_PREC: tl.constexpr,
):
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_m = tl.program_id(2)
    kv_h = pid_h // KV_GROUP

    q_start = tl.load(qo_indptr + pid_b)
    E = tl.load(qo_indptr + pid_b + 1) - q_start
    m_start = pid_m * BLOCK_M
    if m_start < E:
        kv_start = tl.load(kv_indptr + pid_b)
        P = tl.load(kv_indptr + pid_b + 1) - kv_start
        T = P + E  # keys in the concatenated sequence

        offs_m = m_start + tl.arange(0, BLOCK_M)
        row_ok = offs_m < E
        offs_dq = tl.arange(0, BLOCK_DQ)
        offs_dv = tl.arange(0, BLOCK_DV)
        dq_ok = offs_dq < LQ
        dv_ok = offs_dv < LV
        q = tl.load(Q + (q_start + offs_m)[:, None] * stride_qm + pid_h * stride_qh + offs_dq[None, :],
                    mask=row_ok[:, None] & dq_ok[None, :], other=0.0)
        qpos = P + offs_m  # absolute position of each query row

        lo = 0
        if USE_WINDOW:
            lo = tl.maximum(P + m_start - window, 0)
        hi = T
        if IS_CAUSAL and not USE_MASK:
            hi = tl.minimum(T, P + m_start + BLOCK_M)
        if USE_MASK:
            mrow = custom_mask + tl.load(mask_indptr + pid_b)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
        for start in range(lo, hi, BLOCK_N):
            offs_j = start + tl.arange(0, BLOCK_N)
            is_pref = offs_j < P
            is_ext = (offs_j >= P) & (offs_j < T)
            u = offs_j - P  # extend index (negative on prefix columns, which never use it)
            slot = tl.load(kv_indices + kv_start + offs_j, mask=is_pref, other=0).to(tl.int64)
            k_pool = tl.load(K_buf + slot[None, :] * stride_kbs + kv_h * stride_kbh + offs_dq[:, None],
                             mask=is_pref[None, :] & dq_ok[:, None], other=0.0)
            k_new = tl.load(K_ext + (q_start + u)[None, :] * stride_kem + kv_h * stride_keh + offs_dq[:, None],
                            mask=is_ext[None, :] & dq_ok[:, None], other=0.0)
            k = tl.where(is_pref[None, :], k_pool, k_new)
            s = tl.dot(q, k, input_precision=DOT_PREC) * sm_scale
            if USE_CAP:
                s = _soft_cap(s, logit_cap)

            visible = row_ok[:, None] & (is_pref | is_ext)[None, :]
            if USE_MASK:
                bit = tl.load(mrow + offs_m[:, None] * T + offs_j[None, :],
                              mask=row_ok[:, None] & is_ext[None, :], other=0)
                visible = visible & (is_pref[None, :] | (bit != 0))
            elif IS_CAUSAL:
                visible = visible & (offs_j[None, :] <= qpos[:, None])
            if USE_WINDOW:
                visible = visible & (qpos[:, None] <= offs_j[None, :] + window)
            s = tl.where(visible, s, float("-inf"))

            v_pool = tl.load(V_buf + slot[:, None] * stride_vbs + kv_h * stride_vbh + offs_dv[None, :],
                             mask=is_pref[:, None] & dv_ok[None, :], other=0.0)
            v_new = tl.load(V_ext + (q_start + u)[:, None] * stride_vem + kv_h * stride_veh + offs_dv[None, :],
                            mask=is_ext[:, None] & dv_ok[None, :], other=0.0)
            v = tl.where(is_pref[:, None], v_pool, v_new)

            m_new = tl.maximum(m_i, tl.max(s, 1))
            base = tl.where(m_new == float("-inf"), 0.0, m_new)
            scale_old = tl.exp(m_i - base)
            p = tl.exp(s - base[:, None])
            l_i = l_i * scale_old + tl.sum(p, 1)
            acc = acc * scale_old[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
            m_i = m_new

        denom = tl.where(l_i > 0.0, l_i, 1.0)
        out = acc / denom[:, None]
        tl.store(O + (q_start + offs_m)[:, None] * stride_om + pid_h * stride_oh + offs_dv[None, :],
                 out.to(O.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])


def extend_attention_fwd(
    q_extend, k_extend, v_extend, o_extend, k_buffer, v_buffer,
    qo_indptr, kv_indptr, kv_indices, custom_mask, is_causal, mask_indptr, max_len_extend,
    k_scale=1.0, v_scale=1.0, sm_scale: Optional[float] = None, logit_cap: float = 0.0,
    skip_prefix_custom_mask: bool = True, sliding_window_size: int = -1, **kwargs,
) -> None:
    """Extend attention forward with one merged key loop; writes o_extend in place."""
    extra = sorted(name for name, value in kwargs.items() if value is not None and value is not False)
    if extra:
        raise NotImplementedError(f"extend_attention_fwd: unsupported options {extra}")
    if isinstance(k_scale, torch.Tensor) or isinstance(v_scale, torch.Tensor) \
            or k_scale != 1.0 or v_scale != 1.0:
        raise NotImplementedError("extend_attention_fwd: k_scale/v_scale other than 1.0 are not supported")
    if skip_prefix_custom_mask is not True:
        raise NotImplementedError("extend_attention_fwd: skip_prefix_custom_mask=False is not supported")
    n_ext, n_q_heads, lq = q_extend.shape
    n_kv_heads, lv = k_extend.shape[1], v_extend.shape[-1]
    if n_kv_heads <= 0 or n_q_heads % n_kv_heads != 0:
        raise ValueError(f"Hq={n_q_heads} must be a multiple of Hkv={n_kv_heads}")
    if any(t.stride(-1) != 1 for t in (q_extend, k_extend, v_extend, o_extend, k_buffer, v_buffer)):
        raise ValueError("the last (head-dim) axis of every tensor must be contiguous")
    use_mask = custom_mask is not None
    if use_mask and mask_indptr is None:
        raise ValueError("custom_mask requires mask_indptr")
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(lq)
    batch = qo_indptr.shape[0] - 1
    if batch <= 0 or max_len_extend <= 0 or n_ext == 0:
        return
    block_dq = max(triton.next_power_of_2(lq), 16)
    block_dv = max(triton.next_power_of_2(lv), 16)
    if max(block_dq, block_dv) <= 128:
        block_m, block_n = BLOCK_M, BLOCK_N
    else:
        block_m, block_n = BLOCK_M_LARGE_D, BLOCK_N_LARGE_D
    grid = (n_q_heads, batch, triton.cdiv(max_len_extend, block_m))
    _merged_kernel[grid](
        q_extend, k_extend, v_extend, o_extend, k_buffer, v_buffer,
        qo_indptr, kv_indptr, kv_indices,
        custom_mask if use_mask else qo_indptr,
        mask_indptr if use_mask else qo_indptr,
        sm_scale, logit_cap, sliding_window_size,
        q_extend.stride(0), q_extend.stride(1), k_extend.stride(0), k_extend.stride(1),
        v_extend.stride(0), v_extend.stride(1), o_extend.stride(0), o_extend.stride(1),
        k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0), v_buffer.stride(1),
        KV_GROUP=n_q_heads // n_kv_heads, LQ=lq, LV=lv, BLOCK_DQ=block_dq, BLOCK_DV=block_dv,
        BLOCK_M=block_m, BLOCK_N=block_n,
        IS_CAUSAL=is_causal, USE_MASK=use_mask, USE_CAP=logit_cap > 0,
        USE_WINDOW=sliding_window_size > 0,
        DOT_PREC="ieee" if q_extend.dtype == torch.float32 else None,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
