"""Trusted code for the extend-attention task: input generation and an fp64 reference.

Both the verifier's candidate process (to build the inputs it calls the kernel with) and the
orchestrator (to rebuild the same inputs and compute the expected output) call make_inputs
with the same (case, dtype, seed): generation is deterministic on the CPU and only then moved
to the device. The reference itself only ever runs in trusted processes.

Input distributions (VERIFIER.md): q, k, v ~ N(0, 1); in a third of the heads q is scaled x4
("peaky"); in another third every query row is pointed at one visible key ("needle": its
logit stands ~12 above the rest, so skipping any part of the key range shows); q_scale
raises all logits (C9: +-50). Unreferenced pool slots hold NaN: a correct gather never
reads them. kv_indices are scattered (or shuffled runs of 16 on GPU workloads) and may be
shared between requests.
"""

from __future__ import annotations

import math
from typing import Any

import torch

KNOWN_PARAMS = {
    "heads", "head_dim", "v_head_dim", "requests", "request_groups", "causal", "custom_mask",
    "sliding_window", "logit_cap", "max_len_extend", "q_scale", "kv_layout", "shared_prefix",
    "pool_slack", "index_dtype", "distribution",
}
NEEDLE_LOGIT = 12.0


def _lengths(case: dict, gen: torch.Generator) -> list[tuple[int, int]]:
    requests = [tuple(r) for r in case.get("requests", [])]
    for group in case.get("request_groups", []):
        p_lo, p_hi = group["prefix"]
        choices = group["extend"]
        for _ in range(group["count"]):
            p = int(torch.randint(p_lo, p_hi + 1, (1,), generator=gen))
            e = choices[int(torch.randint(0, len(choices), (1,), generator=gen))]
            requests.append((p, e))
    if not requests:
        raise ValueError("a case needs requests or request_groups")
    return requests


def _slots(lengths: list[tuple[int, int]], layout: str, shared: bool, slack: float,
           gen: torch.Generator) -> tuple[int, list[torch.Tensor]]:
    """Pool size and each request's prefix slots (sequence order), scattered over the pool."""
    own = [p for p, _ in lengths]
    if shared and len(lengths) > 1:
        # later requests reuse the first half of request 0's prefix (a shared system prompt)
        common = [min(p, lengths[0][0]) // 2 for p, _ in lengths]
        common[0] = 0
        own = [p - c for (p, _), c in zip(lengths, common)]
    else:
        common = [0] * len(lengths)
    used = sum(own)
    size = used + max(16, int(math.ceil(used * slack)))
    if layout == "runs16":
        runs = torch.randperm((size + 15) // 16, generator=gen)
        order = (runs[:, None] * 16 + torch.arange(16)).flatten()
        order = order[order < size]
    else:
        order = torch.randperm(size, generator=gen)
    slots, start = [], 0
    for b, p in enumerate(own):
        mine = order[start:start + p]
        start += p
        if common[b]:
            mine = torch.cat([slots[0][:common[b]], mine])
        slots.append(mine)
    return size, slots


def _visible(p: int, e: int, causal: bool, window: int, mask: torch.Tensor | None) -> torch.Tensor:
    """[E, P+E] bool: which keys each extend query may attend to (the contract's rules)."""
    t = torch.arange(e)[:, None]
    j = torch.arange(p + e)[None, :]
    vis = torch.ones(e, p + e, dtype=torch.bool)
    ext = j >= p
    if mask is not None:
        vis = torch.where(ext, mask.view(e, p + e), vis)
    elif causal:
        vis &= ~ext | (j - p <= t)
    if window > 0:
        vis &= torch.where(ext, t <= (j - p) + window, (p + t) <= j + window)
    return vis


def make_inputs(case: dict[str, Any], dtype: torch.dtype, seed: int, device: str = "cpu") -> dict[str, Any]:
    """The entry point's arguments, by name and in signature order, for one case and seed."""
    unknown = set(case) - KNOWN_PARAMS
    if unknown:
        raise ValueError(f"unknown case parameters {sorted(unknown)}")
    gen = torch.Generator().manual_seed(seed)
    hq, hkv = case["heads"]
    lq = case["head_dim"]
    lv = case.get("v_head_dim", lq)
    causal = case.get("causal", True)
    window = case.get("sliding_window", -1)
    lengths = _lengths(case, gen)
    pool, slots = _slots(lengths, case.get("kv_layout", "scattered"), case.get("shared_prefix", True),
                         case.get("pool_slack", 0.1), gen)
    n_ext = sum(e for _, e in lengths)
    qo = torch.tensor([0] + [e for _, e in lengths]).cumsum(0)
    kv = torch.tensor([0] + [p for p, _ in lengths]).cumsum(0)

    f32 = dict(dtype=torch.float32)
    q = torch.randn(n_ext, hq, lq, generator=gen, **f32)
    k_ext = torch.randn(n_ext, hkv, lq, generator=gen, **f32)
    v_ext = torch.randn(n_ext, hkv, lv, generator=gen, **f32)
    k_buf = torch.full((pool, hkv, lq), float("nan"), **f32)
    v_buf = torch.full((pool, hkv, lv), float("nan"), **f32)
    indices = torch.cat(slots) if slots else torch.zeros(0, dtype=torch.int64)
    referenced = torch.unique(indices)
    k_buf[referenced] = torch.randn(len(referenced), hkv, lq, generator=gen)
    v_buf[referenced] = torch.randn(len(referenced), hkv, lv, generator=gen)

    masks = []
    if case.get("custom_mask"):
        for b, (p, e) in enumerate(lengths):
            m = torch.rand(e, p + e, generator=gen) < 0.5  # prefix columns: noise the kernel must ignore
            tree = torch.tril(torch.rand(e, e, generator=gen) < 0.6) | torch.eye(e, dtype=torch.bool)
            if b == 0 and e > 1:
                tree[e // 2] = False  # one row sees no extend key at all
            m[:, p:] = tree
            masks.append(m.flatten())

    # distributions: each head is normal, peaky or needle, rotating with the seed
    group = hq // hkv
    scale = 1.0 / math.sqrt(lq)
    for b, (p, e) in enumerate(lengths):
        if e == 0:
            continue
        vis = _visible(p, e, causal, window, masks[b].view(e, p + e) if masks else None)
        rows = slice(int(qo[b]), int(qo[b + 1]))
        keys = torch.cat([k_buf[slots[b]], k_ext[rows]])  # [P+E, Hkv, Lq]
        for h in range(hq):
            kind = (h + seed) % 3
            if kind == 1:
                q[rows, h] *= 4.0
            elif kind == 2:
                pick = torch.multinomial(vis.float() + 1e-30 * ~vis.any(1, keepdim=True), 1, generator=gen)[:, 0]
                kj = keys[pick, h // group]  # [E, Lq]
                q[rows, h] = kj * (NEEDLE_LOGIT / (scale * (kj * kj).sum(-1, keepdim=True)))
    q *= case.get("q_scale", 1.0)

    index_dtype = {"int32": torch.int32, "int64": torch.int64}[case.get("index_dtype", "int64" if seed % 2 else "int32")]
    max_len = case.get("max_len_extend", max(e for _, e in lengths))
    on = lambda x: x.to(device=device, dtype=dtype)  # noqa: E731
    q_in, k_in, v_in = on(q), on(k_ext), on(v_ext)
    if seed % 2:  # strided views, as a fused QKV projection hands them over: never assume contiguity
        if lq == lv:
            packed = torch.cat([q_in, k_in, v_in], dim=1)
            q_in, k_in, v_in = packed[:, :hq], packed[:, hq:hq + hkv], packed[:, hq + hkv:]
        else:
            wide = torch.zeros(n_ext, hq, lq + 16, dtype=dtype, device=device)
            wide[..., :lq] = q_in
            q_in = wide[..., :lq]
    sm_scale = (None, scale, 0.7 * scale)[seed % 3]  # the default, the same value passed, and another one
    return {
        "q_extend": q_in, "k_extend": k_in, "v_extend": v_in,
        "o_extend": torch.empty(n_ext, hq, lv, dtype=dtype, device=device),
        "k_buffer": on(k_buf), "v_buffer": on(v_buf),
        "qo_indptr": qo.to(torch.int32).to(device), "kv_indptr": kv.to(torch.int32).to(device),
        "kv_indices": indices.to(index_dtype).to(device),
        "custom_mask": torch.cat(masks).to(device) if masks else None,
        "is_causal": causal,
        "mask_indptr": (torch.tensor([0] + [e * (p + e) for p, e in lengths]).cumsum(0).to(device)
                        if masks else None),
        "max_len_extend": int(max_len),
        "sm_scale": sm_scale,
        "logit_cap": float(case.get("logit_cap", 0.0)),
        "sliding_window_size": int(window),
    }


def reference(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """fp64 attention by the contract's definition; rows with no visible key are 0."""
    q, k_ext, v_ext = (inputs[n].double() for n in ("q_extend", "k_extend", "v_extend"))
    k_buf, v_buf = inputs["k_buffer"], inputs["v_buffer"]
    qo = inputs["qo_indptr"].tolist()
    kv = inputs["kv_indptr"].tolist()
    idx = inputs["kv_indices"].long()
    mask, mask_ptr = inputs["custom_mask"], inputs["mask_indptr"]
    hq, lq = q.shape[1], q.shape[2]
    group = hq // k_ext.shape[1]
    scale = inputs["sm_scale"] if inputs["sm_scale"] is not None else 1.0 / math.sqrt(lq)
    cap, window = inputs["logit_cap"], inputs["sliding_window_size"]
    out = torch.zeros(q.shape[0], hq, v_ext.shape[2], dtype=torch.float64, device=q.device)
    for b in range(len(qo) - 1):
        p, e = kv[b + 1] - kv[b], qo[b + 1] - qo[b]
        if e == 0:
            continue
        slots = idx[kv[b]:kv[b + 1]]
        keys = torch.cat([k_buf[slots].double(), k_ext[qo[b]:qo[b + 1]]]).repeat_interleave(group, 1)
        vals = torch.cat([v_buf[slots].double(), v_ext[qo[b]:qo[b + 1]]]).repeat_interleave(group, 1)
        m = None
        if mask is not None:
            start = int(mask_ptr[b])
            m = mask[start:start + e * (p + e)].bool().cpu()
        vis = _visible(p, e, inputs["is_causal"], window, m).to(q.device)
        chunk = max(1, (1 << 26) // max(1, hq * (p + e)))  # bound the logits' memory
        for r0 in range(0, e, chunk):
            r1 = min(e, r0 + chunk)
            s = torch.einsum("thd,jhd->htj", q[qo[b] + r0:qo[b] + r1], keys) * scale
            if cap > 0:
                s = cap * torch.tanh(s / cap)
            s = s.masked_fill(~vis[r0:r1], float("-inf"))
            w = torch.softmax(s, dim=-1).nan_to_num(0.0)  # a row with no visible key -> 0
            out[qo[b] + r0:qo[b] + r1] = torch.einsum("htj,jhd->thd", w, vals)
    return {"o_extend": out}


def holdout_cases(seed: int, count: int) -> list[dict[str, Any]]:
    """Hidden cases drawn per evaluation: shapes and options the agent never sees."""
    gen = torch.Generator().manual_seed(seed)
    pick = lambda xs: xs[int(torch.randint(0, len(xs), (1,), generator=gen))]  # noqa: E731
    prefixes = [0, 1, 3, 31, 63, 64, 65, 127, 129, 255, 257, 511, 700]
    extends = [1, 2, 3, 31, 64, 65, 129]
    cases = []
    for i in range(count):
        hkv = pick([1, 2])
        group = pick([1, 2, 4, 7])
        d = pick([32, 64, 80, 96, 128])
        requests = [[pick(prefixes), pick(extends)] for _ in range(pick([1, 2]))]
        case: dict[str, Any] = {"heads": [hkv * group, hkv], "head_dim": d, "requests": requests}
        option = (i + seed) % 5  # every option comes up across evaluations
        if option == 1:
            case["custom_mask"] = True
        elif option == 2:
            case["sliding_window"] = pick([1, 8, 33, 100])
        elif option == 3:
            case["logit_cap"] = pick([5.0, 20.0])
        elif option == 4:
            case["causal"] = False
        if pick([0, 1, 2]) == 0:
            case["max_len_extend"] = max(e for _, e in requests) + pick([1, 17, 200])
        cases.append(case)
    return cases


def cost(case: dict[str, Any], dtype_bytes: int, seed: int = 0) -> tuple[float, float]:
    """(bytes moved, FLOPs) a perfect kernel needs: the roofline floor of one call."""
    gen = torch.Generator().manual_seed(seed)
    lengths = _lengths(case, gen)
    hq, hkv = case["heads"]
    lq = case["head_dim"]
    lv = case.get("v_head_dim", lq)
    causal = case.get("causal", True)
    read = sum((p + e) * hkv * (lq + lv) + e * hq * lq for p, e in lengths)
    written = sum(e * hq * lv for _, e in lengths)
    pairs = sum(e * p + (e * (e + 1) // 2 if causal else e * e) for p, e in lengths)
    return float((read + written) * dtype_bytes), float(2.0 * hq * pairs * (lq + lv))
