"""Trusted code for the RMSNorm task: inputs and an fp64 reference.

Rows mix scales (tiny, unit, large) so a kernel that drops the eps, the mean or the fp32
accumulation shows; the weight is random, never all ones.
"""

from __future__ import annotations

from typing import Any

import torch

KNOWN = {"rows", "cols", "eps", "scale"}


def make_inputs(case: dict[str, Any], dtype: torch.dtype, seed: int, device: str = "cpu",
                variant: int = 0) -> dict[str, Any]:
    """x, weight, out, eps; a variant > 0 has the same shapes with new content (same-buffer repeat calls)."""
    unknown = set(case) - KNOWN
    if unknown:
        raise ValueError(f"unknown case parameters {sorted(unknown)}")
    rows, cols = case["rows"], case["cols"]
    if device == "meta":  # shapes, strides and dtypes only: what a dry run of the launches needs
        meta = {"dtype": dtype, "device": "meta"}
        return {"x": torch.empty(rows, cols, **meta), "weight": torch.empty(cols, **meta),
                "out": torch.empty(rows, cols, **meta), "eps": float(case.get("eps", 1e-6))}
    gen = torch.Generator().manual_seed((seed * 1_000_003 + variant) % (1 << 62))
    x = torch.randn(rows, cols, generator=gen)
    row_scale = torch.tensor([1e-2, 1.0, 30.0])[torch.randint(0, 3, (rows, 1), generator=gen)]
    x = x * row_scale * case.get("scale", 1.0)
    w = 0.5 + torch.rand(cols, generator=gen)
    return {"x": x.to(device=device, dtype=dtype), "weight": w.to(device=device, dtype=dtype),
            "out": torch.empty(rows, cols, dtype=dtype, device=device), "eps": float(case.get("eps", 1e-6))}


def reference(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    x, w = inputs["x"].double(), inputs["weight"].double()
    rstd = torch.rsqrt((x * x).mean(-1, keepdim=True) + inputs["eps"])
    return {"out": x * rstd * w}


def holdout_cases(seed: int, count: int) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    return [{"rows": int(torch.randint(1, 40, (1,), generator=gen)), "cols": int(torch.randint(1, 3000, (1,), generator=gen))}
            for _ in range(count)]


def cost(case: dict[str, Any], dtype_bytes: int, seed: int = 0) -> tuple[float, float]:
    n = case["rows"] * case["cols"]
    return float((2 * n + case["cols"]) * dtype_bytes), float(4 * n)


def error_groups(inputs: dict[str, Any], output: str) -> list[tuple[str, tuple]]:
    """Each row judged on its own as well as all together (verifier/check.py)."""
    return [(f"row {r}", (r,)) for r in range(inputs["x"].shape[0])]
