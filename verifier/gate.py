"""The static gate: a default-deny AST check of a candidate's source before anything runs.

Only what verifier/allowlist.py lists is allowed: imports, the syntax of a kernel file, the
names and exact attribute chains it may reach. Host code (the wrapper, grid functions,
heuristics, autotune hooks) is checked with a small kind analysis: every value is either
known not to be a tensor (ints, shapes, dtypes, strings, configs) or may be one; a value that
may be a tensor can only have its metadata read, be viewed, allocated from or passed on —
never converted, compared, branched on, iterated, formatted or indexed into a Python value,
so no host read of tensor contents can be written. Each rejection names the line, the rule
and what is allowed instead.

The gate is the first layer, not the deciding one: the verdict rests on what trusted code
observes from outside the candidate's process (verifier/session.py).

The rules, in the order they run: the file's top level (verifier/toplevel.py: imports,
constants, definitions, decorators), host code (verifier/host.py, with the kinds and the
expression rules in verifier/kinds.py), then the Triton kernels (verifier/jit.py).
"""

from __future__ import annotations

import ast

from kopt.verifier import host, jit
from kopt.verifier.toplevel import Module, Options, Violation

__all__ = ["Options", "Violation", "check_source", "summary"]


def check_source(source: str, extra_imports: tuple[str, ...] = (), allow_inline_asm: bool = False,
                 filename: str = "kernel.py", *, extra_chains: tuple[str, ...] = (), entry_point: str | None = None,
                 signature: tuple[str, ...] = (), scalar_args: tuple[str, ...] = ()) -> list[Violation]:
    """Every violation in `source` (empty: the gate passes)."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        return [Violation(exc.lineno or 0, "syntax", f"{exc.msg} (col {exc.offset})")]
    opts = Options(frozenset(extra_imports), frozenset(extra_chains), allow_inline_asm, entry_point,
                   tuple(signature), frozenset(scalar_args))
    module = Module(tree, opts)
    module.check()
    host.check(module)
    jit.check(module)
    return sorted(set(module.violations), key=lambda v: (v.line, v.rule, v.message))


def summary() -> str:
    """The allowlist in a few lines, for the agent's instruction."""
    return ("Allowed: imports of torch, triton, triton.language (and its math/extra.libdevice), math, typing, "
            "functools; module-level constants and function definitions; @triton.jit, @triton.autotune "
            "(configs, key, prune_configs_by, hooks), @triton.heuristics. Inside kernels: the documented "
            "tl.* functions, tl.math.*, libdevice.*, range/tl.range/tl.static_range. Host code may check "
            "arguments (shapes, strides, dtypes, scalars), raise NotImplementedError/ValueError, allocate "
            "(torch.empty/empty_like/zeros, tensor.new_empty), view (view/reshape/transpose/...), compute "
            "grids (triton.cdiv, math, integer arithmetic) and launch kernels. Never: dunders, getattr and "
            "other introspection, I/O, exec/eval, try/except, classes, globals, module-level mutable state, "
            "attribute assignment, device introspection (.device, torch.cuda), torch compute, or reading "
            "tensor values on the host (.item(), int(t), bool(t), if t, str/format of a tensor, iteration).")


