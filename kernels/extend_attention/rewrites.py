"""Source rewrites the built-in policy may try on this task's kernel (trusted task code).

Each takes the kernel's source and returns the rewritten source, or None when its pattern is
not there (already applied, or the kernel was changed so that it no longer applies). Each is
tested: applied to the baseline, the verifier must accept the result.
"""

from __future__ import annotations

LOG2E = "1.4426950408889634"


def exp2_folded_scale(source: str) -> str | None:
    """Softmax in base 2: fold log2(e) into the logit scale once, then exp2 instead of exp."""
    steps = [
        ("    alpha = tl.exp(m_i - m_safe)", "    alpha = tl.exp2(m_i - m_safe)"),
        ("    p = tl.exp(s - m_safe[:, None])", "    p = tl.exp2(s - m_safe[:, None])"),
        ("    if USE_CAP:  # s = cap * tanh(sm_scale * qk / cap)\n        cap_in = sm_scale / logit_cap\n",
         "    # logits in log2 units (s * log2(e)): the softmax uses exp2\n"
         f"    qk_scale = sm_scale * {LOG2E}\n"
         "    if USE_CAP:  # s = cap * tanh(sm_scale * qk / cap)\n        cap_in = sm_scale / logit_cap\n"
         f"        cap_out = logit_cap * {LOG2E}\n"),
    ]
    out = source
    for old, new in steps:
        if out.count(old) != 1:
            return None
        out = out.replace(old, new)
    if out.count("s = logit_cap * _tanh(qk * cap_in)") < 1 or out.count("s = qk * sm_scale") < 1:
        return None
    out = out.replace("s = logit_cap * _tanh(qk * cap_in)", "s = cap_out * _tanh(qk * cap_in)")
    out = out.replace("s = qk * sm_scale", "s = qk * qk_scale")
    # the invariant comment of the softmax step now speaks of base 2
    return out.replace("sum_j e^(s_j - m_i)", "sum_j 2^(s_j - m_i)")


def pipeline_prefix(source: str) -> str | None:
    """Software-pipeline the prefix gather loop (loads of tile n+1 overlap the math of tile n)."""
    old = "for start_n in range(lo, P, BLOCK_N):"
    if source.count(old) != 1:
        return None
    return source.replace(old, "for start_n in tl.range(lo, P, BLOCK_N, num_stages=2):")


REWRITES = [("exp2_folded_scale", exp2_folded_scale), ("pipeline_prefix", pipeline_prefix)]
