"""The static gate is default-deny: each cheat class is refused with its line and rule, and honest
kernels of many shapes (Triton tutorials, SGLang-style wrappers, Hopper-era constructs) pass."""

from __future__ import annotations

import textwrap

import pytest
from tests.conftest import BASELINE

from kopt.verifier.gate import check_source, summary
from kopt.verifier.task import load_task

HEADER = "import math\nimport torch\nimport triton\nimport triton.language as tl\n"
TASK = load_task("extend_attention").config
SIG = dict(entry_point="f", signature=("x", "o", "n", "scale"), scalar_args=("n", "scale"))


def violations(src: str, **kwargs):
    return check_source(HEADER + textwrap.dedent(src), **{**SIG, **kwargs})


def rules(src: str, **kwargs) -> set[str]:
    return {v.rule for v in violations(src, **kwargs)}


def test_the_pinned_baselines_pass():
    for name in ("extend_attention", "rmsnorm"):
        cfg = load_task(name).config
        source = (load_task(name).root / cfg.baseline).read_text()
        assert check_source(source, entry_point=cfg.entry_point, signature=tuple(cfg.signature),
                            scalar_args=tuple(cfg.scalar_args)) == []
    assert BASELINE.is_file()


# (source, a rule it must break) - one line per cheat class of the threat table (docs/threats.md)
CHEATS = [
    # imports and modules reached through re-exports (threat 26)
    ("import os\n", "import"), ("import ctypes\n", "import"), ("from . import baseline\n", "import"),
    ("from torch import *\n", "import"), ("from triton.language.core import builtins\n", "import"),
    ("from triton.language import core\n", "import"), ("from torch import cuda\n", "import"),
    ("from math import *\n", "import"), ("import triton.runtime\n", "import"),
    ("def f(x, o, n, scale):\n    return tl.core.builtins.exec('1')\n", "call"),
    ("def f(x, o, n, scale):\n    return tl.core.inspect.sys.modules\n", "attribute"),
    ("def f(x, o, n, scale):\n    return tl.extra.pkgutil.importlib\n", "attribute"),
    ("def f(x, o, n, scale):\n    return torch.os.system('true')\n", "call"),
    ("def f(x, o, n, scale):\n    return torch.os\n", "attribute"),
    ("def f(x, o, n, scale):\n    return triton.knobs.os.environ\n", "attribute"),
    ("def f(x, o, n, scale):\n    return math.sys\n", "attribute"),
    ("import functools\ndef f(x, o, n, scale):\n    return functools.reduce\n", "attribute"),
    ("import typing\ndef f(x, o, n, scale):\n    return typing.sys\n", "attribute"),
    ("@triton.jit\ndef k(X):\n    tl.core.builtins.exec('1')\n", "triton-api"),
    ("@triton.jit\ndef k(X):\n    tl.math.core.builtins.open('/etc/hostname')\n", "triton-api"),
    # getattr by string, dunders, introspection (threats 26-27)
    ("def f(x, o, n, scale):\n    return getattr(torch, 'ops')\n", "name"),
    ("def f(x, o, n, scale):\n    return vars(torch)\n", "name"),
    ("def f(x, o, n, scale):\n    return x.__class__\n", "private"),
    ("def f(x, o, n, scale):\n    return f.__globals__\n", "private"),
    ("def f(x, o, n, scale):\n    return torch._C\n", "private"),
    ("def f(x, o, n, scale):\n    return __builtins__\n", "dunder"),
    ("def f(x, o, n, scale):\n    return '{0.__class__}'.format(x)\n", "host-method"),
    ("def f(x, o, n, scale):\n    return eval('x')\n", "name"),
    ("def f(x, o, n, scale):\n    return type(x)\n", "name"),
    ("def f(x, o, n, scale):\n    print(x)\n", "name"),
    ("@triton.jit\ndef k(X):\n    X.__class__\n", "private"),
    ("@triton.jit\ndef k(X):\n    X.handle.data\n", "attribute"),
    ("@triton.jit\ndef k(X):\n    print(X)\n", "name"),
    # state between calls (threats 2-3)
    ("_CACHE = {}\n", "module-state"), ("_BUF = torch.empty(10)\n", "module-state"),
    ("class Cache:\n    seen = {}\n", "module-code"),
    ("def f(x, o, n, scale, cache={}):\n    return x\n", "mutable-default"),
    ("def f(x, o, n, scale):\n    global Y\n    Y = x\n", "global"),
    ("L = [1]\ndef f(x, o, n, scale):\n    L.append(x)\n", "mutation"),
    ("L = [1]\ndef f(x, o, n, scale):\n    L[0] = x\n", "subscript-assignment"),
    ("def f(x, o, n, scale):\n    f.calls = 1\n", "attribute-assignment"),
    ("def f(x, o, n, scale):\n    torch.cuda.Event.elapsed_time = None\n", "attribute-assignment"),
    ("import functools\n@functools.lru_cache\ndef f(x, o, n, scale):\n    return x\n", "decorator"),
    ("def f(x: torch.Tensor = [], o=None, n=0, scale=1.0):\n    return x\n", "mutable-default"),
    ("def f(x: ([],), o=None, n=0, scale=1.0):\n    return x\n", "annotation"),
    # control flow that falls back or escapes (threats 15, 25)
    ("def f(x, o, n, scale):\n    try:\n        return x\n    except Exception:\n        return 0\n", "try"),
    ("def f(x, o, n, scale):\n    raise SystemExit(0)\n", "raise"),
    ("def f(x, o, n, scale):\n    with torch.no_grad():\n        pass\n", "statement"),
    ("def f(x, o, n, scale):\n    yield x\n", "syntax"),
    ("async def f(x, o, n, scale):\n    return x\n", "module-code"),
    ("def f(x, o, n, scale):\n    @triton.jit\n    def g():\n        return x\n    return g\n", "statement"),
    ("def f(x, o, n, scale):\n    def g(meta):\n        return int(x)\n    return g\n", "host-read"),
    ("def f(x, o, n, scale):\n    return torch.empty(3, device=x.device if x.is_cuda else 'cpu')\n", "host-method"),
    ("def f(x, o, n, scale):\n    d = x.device\n    return torch.empty(3, device=d)\n", "host-method"),
    # device introspection (threat 28)
    ("def f(x, o, n, scale):\n    return x.device\n", "host-method"),
    ("def f(x, o, n, scale):\n    return x.is_cuda\n", "host-method"),
    ("def f(x, o, n, scale):\n    return torch.cuda.is_available()\n", "call"),
    ("def f(x, o, n, scale):\n    return triton.runtime.driver\n", "attribute"),
    # every form of host read of tensor values (threats 6, 23)
    ("def f(x, o, n, scale):\n    return x.item()\n", "host-method"),
    ("def f(x, o, n, scale):\n    return x.tolist()\n", "host-method"),
    ("def f(x, o, n, scale):\n    return x.cpu()\n", "host-method"),
    ("def f(x, o, n, scale):\n    return x.numpy()\n", "host-method"),
    ("def f(x, o, n, scale):\n    return int(x)\n", "host-read"),
    ("def f(x, o, n, scale):\n    return float(x[0])\n", "host-read"),
    ("def f(x, o, n, scale):\n    return bool(x)\n", "host-read"),
    ("def f(x, o, n, scale):\n    if x:\n        return 1\n", "host-read"),
    ("def f(x, o, n, scale):\n    if (x > 0).any():\n        return 1\n", "host-read"),
    ("def f(x, o, n, scale):\n    return 1 if x[0] > 2 else 0\n", "host-read"),
    ("def f(x, o, n, scale):\n    return str(x)\n", "host-read"),
    ("def f(x, o, n, scale):\n    return f'{x}'\n", "host-read"),
    ("def f(x, o, n, scale):\n    return [v for v in x]\n", "host-read"),
    ("def f(x, o, n, scale):\n    for v in x:\n        pass\n", "host-read"),
    ("def f(x, o, n, scale):\n    return list(x)\n", "host-read"),
    ("def f(x, o, n, scale):\n    return max(x)\n", "host-read"),
    ("def f(x, o, n, scale):\n    return range(x[1])\n", "host-read"),
    ("def f(x, o, n, scale):\n    return math.sqrt(x[0])\n", "host-read"),
    ("def f(x, o, n, scale):\n    return (1, 2)[x[0]]\n", "host-read"),
    ("def f(x, o, n, scale):\n    return x == 0\n", "host-read"),
    ("def f(x, o, n, scale):\n    assert x.sum() > 0\n", "host-method"),
    ("def f(x, o, n, scale):\n    return x + 1\n", "host-read"),
    ("def f(x, o, n, scale):\n    return x.max()\n", "host-method"),
    ("def f(x, o, n, scale):\n    return x.data_ptr()\n", "host-method"),
    ("def g(t):\n    return int(t)\n\ndef f(x, o, n, scale):\n    return g(x)\n", "host-read"),
    ("@triton.jit\ndef k(X, n):\n    pass\n\ndef f(x, o, n, scale):\n    k[(x[0],)](x, n)\n", "host-read"),
    ("@triton.jit\ndef k(X, B: tl.constexpr):\n    pass\n\ndef f(x, o, n, scale):\n    k[(1,)](x, B=x.sum())\n",
     "host-method"),
    ("@triton.heuristics({'E': lambda a: a['X'][0] > 0})\n@triton.jit\ndef k(X, E: tl.constexpr):\n    pass\n\n"
     "def f(x, o, n, scale):\n    k[(1,)](x)\n", "host-read"),
    # torch compute and library attention instead of a Triton kernel (threat 15)
    ("def f(x, o, n, scale):\n    return torch.nn.functional.scaled_dot_product_attention(x, x, x)\n", "call"),
    ("def f(x, o, n, scale):\n    return torch.einsum('ij,jk->ik', x, x)\n", "call"),
    ("def f(x, o, n, scale):\n    return torch.Tensor.add(x, x)\n", "call"),
    ("def f(x, o, n, scale):\n    return x @ x\n", "matmul"),
    ("def f(x, o, n, scale):\n    o[:] = x\n", "subscript-assignment"),
    ("def f(x, o, n, scale):\n    o.copy_(x)\n", "host-method"),
    ("def f(x, o, n, scale):\n    x.fill_(0)\n", "mutation"),
    # streams, events, graphs, timers (threats 5, 7)
    ("def f(x, o, n, scale):\n    s = torch.cuda.Stream()\n", "call"),
    ("def f(x, o, n, scale):\n    return triton.testing.do_bench(f)\n", "call"),
    ("@triton.autotune(configs=[triton.Config({'B': 16})], key=[], do_bench=len)\n@triton.jit\ndef k(X, B: "
     "tl.constexpr):\n    pass\n", "autotune"),
    ("@triton.jit\ndef k(X):\n    tl.inline_asm_elementwise('mov.b32 $0, $1;', '=r,r', [X], dtype=tl.int32, "
     "is_pure=True, pack=1)\n", "triton-api"),
    ("@triton.jit\ndef k(X):\n    tl.device_print('x', X)\n", "triton-api"),
    ("def helper(x):\n    return x\n\n@triton.jit\ndef k(X):\n    helper(X)\n", "call"),
    ("def f(x:\n", "syntax"),
    # found by a panel: host reads through a Python value's methods (list.count and tuple.index compare with ==,
    # dict.get hashes), unpacking a tensor, and grids and heuristics that return a tensor (Triton reads them)
    ("def f(x, o, n, scale):\n    c = [5].count(x[0])\n    if c:\n        return\n", "host-read"),
    ("def f(x, o, n, scale):\n    c = (1, 2).index(x[0])\n", "host-read"),
    ("def f(x, o, n, scale):\n    c = {1: 2}.get(x[0], 0)\n", "host-read"),
    ("def f(x, o, n, scale):\n    c = (*x,)\n    return len(c)\n", "host-read"),
    ("def f(x, o, n, scale):\n    y = o.view(x[0])\n", "host-read"),  # a 0-dim tensor as a size: __index__
    ("@triton.jit\ndef k(X, O, B: tl.constexpr):\n    pass\n\n"
     "def f(x, o, n, scale):\n    g = lambda meta: (x[0], 1, 1)\n    k[g](x, o, B=16)\n", "host-read"),
    ("@triton.jit\ndef k(X, O, B: tl.constexpr):\n    pass\n\n"
     "def f(x, o, n, scale):\n    k[lambda meta: (x[0],)](x, o, B=16)\n", "host-read"),
    ("@triton.jit\ndef k(X, O, B: tl.constexpr):\n    pass\n\n"
     "def f(x, o, n, scale):\n    def g(meta):\n        return (x[0],)\n    k[g](x, o, B=16)\n", "host-read"),
    ("@triton.jit\ndef k(X, O, B: tl.constexpr):\n    pass\n\ndef g(meta):\n    return (meta['X'][0],)\n\n"
     "def f(x, o, n, scale):\n    k[g](x, o, B=16)\n", "host-read"),
    ("@triton.heuristics({'B': lambda args: args['X'][0]})\n@triton.jit\ndef k(X, O, B: tl.constexpr):\n    pass\n\n"
     "def f(x, o, n, scale):\n    k[(1,)](x, o)\n", "host-read"),
    # **kwargs: its names may be iterated and tested, its values (maybe tensors) never compared
    ("def f(x, o, n, scale, **kwargs):\n    for name in kwargs:\n        if kwargs[name] > 0:\n            return\n",
     "host-read"),
    ("def f(x, o, n, scale, **kwargs):\n    if kwargs.get('t', 0) > 0:\n        return\n", "host-read"),
    ("def f(x, o, n, scale, **kwargs):\n    kwargs = x\n    for v in kwargs:\n        pass\n", "host-read"),
    ("def f(x, o, n, scale, **kwargs):\n    if 5 in list(kwargs.values()):\n        return\n", "host-read"),
    ("def f(x, o, n, scale, **kwargs):\n    if x[0] in kwargs:\n        return\n", "host-read"),
    # a defaulted parameter filled through *iterable or **mapping gets what they hold: maybe a tensor
    ("def g(a, n=0):\n    if n > 0:\n        return 1\n\ndef f(x, o, n, scale):\n    g(x, **{'n': x[0]})\n",
     "host-read"),
    ("def g(n=0, m=1):\n    if m > 0:\n        return 1\n\ndef f(x, o, n, scale):\n    g(*[1, x[0]])\n", "host-read"),
    ("def g(a, n=0, **rest):\n    if n > 0:\n        return 1\n\ndef f(x, o, n, scale, **kwargs):\n    g(x, **kwargs)\n",
     "host-read"),
    # a helper's defaulted parameter is a scalar only where a call leaves it out: here a call passes a tensor
    ("def g(x, m, block=64):\n    if block > 0:\n        return m\n\n"
     "def f(x, o, n, scale):\n    g(x, n)\n    g(x, n, o)\n", "host-read"),
    # an import rebound by a name of the file: a tensor parameter named `torch` (an independent panel's d06
    # computed on the host through `torch.matmul(...)` read as the library's)
    ("def g(torch, math):\n    return torch.sum()\n\ndef f(x, o, n, scale):\n    g(x, o)\n", "shadow"),
    ("def f(x, o, n, scale):\n    math = x\n    return math\n", "shadow"),
    ("def f(x, o, n, scale):\n    for tl in (x, o):\n        pass\n", "shadow"),
    ("def triton(x):\n    return x\n", "shadow"),
    # module state reached through an alias the function did not make: a loop over `[CONFIGS]` (an
    # independent panel's d05 kept a tensor in a module-level config list so), a tuple unpacking
    ("CONFIGS = [triton.Config({})]\ndef f(x, o, n, scale):\n    for keep in [CONFIGS]:\n        keep.append(x)\n",
     "mutation"),
    ("CONFIGS = [triton.Config({})]\ndef f(x, o, n, scale):\n    keep, m = [CONFIGS, 1]\n    keep.append(x)\n",
     "mutation"),
    ("CONFIGS = [triton.Config({})]\ndef f(x, o, n, scale):\n    [k.append(x) for k in [CONFIGS]]\n", "mutation"),
    ("CONFIGS = [triton.Config({})]\ndef f(x, o, n, scale):\n    for keep in [CONFIGS]:\n        keep[0] = x\n",
     "subscript-assignment"),
    # an exception's arguments formatted on the host: str(ValueError(t)) prints a tensor's values and
    # device (an independent panel's d02 branched on "cuda" in it, in a grid lambda)
    ("@triton.jit\ndef k(X, O):\n    pass\n\n"
     "def f(x, o, n, scale):\n    k[lambda meta: (1 + len(str(ValueError(x))) % 2,)](x, o)\n", "host-read"),
    ("def f(x, o, n, scale):\n    raise ValueError(x)\n", "host-read"),
    ("def f(x, o, n, scale):\n    e = ValueError('a', t=x[0])\n", "host-read"),
    # an assertion's message is formatted when it fails (an independent panel's showed a hidden case's index
    # tensors in the rejection that way)
    ("def f(x, o, n, scale):\n    assert x.shape[0] <= 100, (n, x)\n", "host-read"),
    ("def f(x, o, n, scale):\n    assert x.shape[0] <= 100, f'{x}'\n", "host-read"),
    # a fill value is read on the host (an independent panel's: full_like with a tensor as the value)
    ("def f(x, o, n, scale):\n    y = torch.full_like(o, x)\n", "host-read"),
    ("def f(x, o, n, scale):\n    y = torch.full_like(o, fill_value=x[0])\n", "host-read"),
]


@pytest.mark.parametrize("src, rule", CHEATS, ids=[f"{i}-{r}" for i, (_, r) in enumerate(CHEATS)])
def test_cheat_is_refused(src, rule):
    found = violations(src)
    assert rule in {v.rule for v in found}, found


def test_a_violation_names_the_line_the_rule_and_what_is_allowed():
    (violation,) = check_source(HEADER + "\n\ndef f(x, o, n, scale):\n    return x.item()\n", **SIG)
    assert violation.line == 8
    assert str(violation).startswith("line 8: [host-method] .item is not allowed on a value that may be a tensor")
    assert "allowed: shape, stride()" in violation.message and "host is not allowed" in violation.message


HONEST = [
    "BLOCK_M = 128\nNAMES = ('a', 'b')\nLOG2E = 1.4426950408889634\nX = -1\nC = math.log2(math.e)\n"
    "D = tl.constexpr(4)\nT = tl.float16\nCONFIGS = [triton.Config({'B': 16}, num_warps=4)]\n",
    # a tutorial-style kernel and wrapper
    "@triton.jit\ndef k(X, O, N: tl.constexpr, B: tl.constexpr):\n    offs = tl.arange(0, B)\n"
    "    x = tl.load(X + offs, mask=offs < N, other=0.0)\n    y = tl.exp2(x.to(tl.float32) * 1.44)\n"
    "    acc = tl.zeros([B], dtype=tl.float32)\n    for i in tl.range(0, N, B, num_stages=2):\n        acc += y\n"
    "    for j in tl.static_range(2):\n        acc = tl.where(acc > 0, acc, 0.0)\n"
    "    tl.store(O + offs, acc.to(O.dtype.element_ty), mask=offs < N)\n\n"
    "def f(x, o, n, scale):\n    rows, cols = x.shape\n    if x.stride(-1) != 1 or o.shape != x.shape:\n"
    "        raise ValueError(f'bad layout {tuple(x.shape)} {x.dtype}')\n    if scale is None:\n"
    "        scale = 1.0 / math.sqrt(cols)\n    if n <= 0 or rows == 0:\n        return\n"
    "    block = max(triton.next_power_of_2(cols), 16)\n    grid = (triton.cdiv(rows, 4), 1)\n"
    "    k[grid](x, o, N=cols, B=block, num_warps=4 if block <= 1024 else 8)\n",
    # libdevice, tl.math, both import styles
    "from triton.language.extra import libdevice\nfrom triton.language.extra.cuda import libdevice as cl\n"
    "@triton.jit\ndef k(X):\n    x = tl.load(X)\n    tl.store(X, libdevice.tanh(x) + cl.exp(x) + tl.math.exp2(x) + "
    "tl.extra.cuda.libdevice.tanh(x))\n",
    # autotune with prune_configs_by, hooks that read a config, heuristics, grid lambda on META
    "def prune(configs, named_args, **kwargs):\n    kept = [c for c in configs if c.kwargs['B'] <= named_args['n'] "
    "and c.num_warps >= 4]\n    return kept if kept else configs\n\n"  # (a panel's honest pruner: the gate refused it)
    "@triton.autotune(configs=[triton.Config({'B': 16}, num_warps=4, num_stages=2), triton.Config({'B': 32}, "
    "num_warps=8)], key=['n'], prune_configs_by={'early_config_prune': prune}, pre_hook=None, "
    "reset_to_zero=['O'])\n"
    "@triton.heuristics({'EVEN': lambda args: args['n'] % args['B'] == 0})\n@triton.jit\n"
    "def k(X, O, n, B: tl.constexpr, EVEN: tl.constexpr):\n    pass\n\n"
    "def f(x, o, n, scale):\n    grid = lambda META: (triton.cdiv(x.shape[0], META['B']),)\n    k[grid](x, o, n)\n"
    "    def grid2(meta):\n        return (triton.cdiv(x.shape[0], meta['B']), n)\n    k[grid2](x, o, n)\n",
    # SGLang-style argument checks, **kwargs of unknown options, helpers, allocation, views
    "@triton.jit\ndef k(X, O, M):\n    pass\n\n"
    "def _launch(x, o, m, block):\n    grid = (triton.cdiv(m, block),)\n    k[grid](x, o, m)\n\n"
    "def f(x, o, n, scale, **kwargs):\n    extra = sorted(name for name, value in kwargs.items() if value is not None "
    "and value is not False)\n    if extra:\n        raise NotImplementedError(f'unsupported {extra}')\n"
    "    if isinstance(scale, torch.Tensor) or scale != 1.0:\n        raise NotImplementedError('scale')\n"
    "    if any(t.dtype != x.dtype for t in (x, o)) or not all(t.stride(-1) == 1 for t in (x, o)):\n"
    "        raise ValueError('dtype')\n    m = x.shape[0] * x.shape[1]\n"
    "    lse = torch.empty((m, 2), dtype=torch.float32, device=x.device)\n    part = o.new_empty((4, m))\n"
    "    scratch = torch.empty_like(o)\n    scratch.zero_()\n    flat = x.view(-1, x.shape[-1]).transpose(0, 1)\n"
    "    sizes = []\n    sizes.append(m)\n    _launch(flat, o[:, :1], m, 64)\n    _launch(lse, part, sizes[0], 32)\n",
    # launches factored into helpers with defaulted (and keyword-only) parameters, branching on them
    "@triton.jit\ndef k(X, O, M, B: tl.constexpr):\n    pass\n\n"
    "def _launch(x, o, rows, block=64, *, split=1):\n    if rows > 0 and split >= 1:\n"
    "        k[(triton.cdiv(rows, block), split)](x, o, rows, B=block)\n\n"
    "def _outer(a, b, rows):\n    if rows % 2 == 0:\n        _launch(a, b, rows, split=2)\n"
    "    _launch(a, b, rows)\n\n"
    "def f(x, o, n, scale):\n    _outer(x, o, x.shape[0])\n",
    # option checks over **kwargs as a panel's honest kernel wrote them (the gate refused the loop)
    "OK = ('a', 'b')\n\n"
    "def f(x, o, n, scale, **kwargs):\n    for name in kwargs:\n"
    "        if name not in OK and kwargs[name] is not None and kwargs[name] is not False:\n"
    "            raise NotImplementedError(f'option {name}')\n"
    "    if 'sinks' in kwargs and kwargs.get('sinks') is not None or sorted(set(kwargs) - set(OK)):\n"
    "        raise NotImplementedError('sinks')\n    for k in kwargs.keys():\n        pass\n"
    "    if kwargs:\n        return\n",
    # the option checks in a helper that is handed the wrapper's **kwargs (a panel's honest kernel)
    "OK = ('a', 'b')\n\n"
    "def _reject(scale, extra):\n    names = [k for k in extra if k not in OK and extra[k] is not None]\n"
    "    if names or scale != 1.0:\n        raise NotImplementedError(f'{names}')\n\n"
    "def f(x, o, n, scale, **kwargs):\n    _reject(scale, kwargs)\n",
    # the honest side of the rows above: unpacking lists of tensors and *args, max(*shape), grids of shapes
    "@triton.jit\ndef k(X, O, N, B: tl.constexpr):\n    pass\n\n"
    "def _l(*args):\n    k[(1,)](*args, B=16)\n\n"
    "def grid(meta):\n    return (triton.cdiv(meta['N'], meta['B']),)\n\n"
    "def f(x, o, n, scale):\n    args = [x, o, max(*x.shape)]\n    k[(1,)](*args, B=16)\n    _l(x, o, n)\n"
    "    g = lambda meta: (triton.cdiv(x.shape[0], meta['B']), 1)\n    k[g](x, o, n, B=16)\n"
    "    k[grid](x, o, x.shape[0], B=16)\n    names = ['a']\n    if names.count('a') == 1 and (1, 2).index(1) == 0:\n"
    "        return\n",
    # tensor descriptors and their allocator (Hopper)
    "from triton.tools.tensor_descriptor import TensorDescriptor\n\n"
    "def alloc(size, alignment, stream):\n    return torch.empty(size, device='cuda', dtype=torch.int8)\n\n"
    "@triton.jit\ndef k(desc, Y, n, B: tl.constexpr):\n    d2 = tl.make_tensor_descriptor(Y, shape=[n, B], strides=[B, 1], "
    "block_shape=[B, B])\n    t = desc.load([0, 0])\n    d2.store([0, 0], t)\n\n"
    "def f(x, o, n, scale):\n    triton.set_allocator(alloc)\n    desc = TensorDescriptor.from_tensor(x, [64, 64])\n"
    "    k[(1,)](desc, o, x.shape[0], B=64)\n",
    # the honest side of the shadow, alias and exception rows: names beside the imports, a list the function
    # made and filled in a loop, messages of shapes and dtypes
    "CONFIGS = [triton.Config({})]\n\n"
    "def f(x, o, n, scale):\n    torch_dtype, tl_block = x.dtype, 16\n    parts = []\n"
    "    for c in CONFIGS:\n        parts.append(c.num_warps)\n    for t in (x, o):\n        parts.append(t.shape[0])\n"
    "    if x.dim() != 3:\n        raise ValueError(f'q must be 3-d, got {tuple(x.shape)}', x.dtype, tl_block)\n"
    "    if parts and torch_dtype != o.dtype:\n        raise NotImplementedError(str(x.dtype))\n"
    "    assert x.shape[0] == o.shape[0], (f'rows {x.shape[0]} != {o.shape[0]}', x.dtype)\n",
    "def f(x, o, n, scale):\n    m = torch.full_like(o, float('-inf'), dtype=torch.float32)\n"
    "    l = torch.zeros_like(o)\n    z = torch.full_like(x, scale * 0.5)\n",
]


@pytest.mark.parametrize("src", HONEST, ids=range(len(HONEST)))
def test_honest_code_passes(src):
    assert violations(src) == []


def test_task_can_extend_the_allowlists():
    assert rules("import numpy\n") == {"import"}
    assert rules("import numpy\n", extra_imports=("numpy",)) == set()
    src = "def f(x, o, n, scale):\n    return torch.sigmoid\n"
    assert rules(src) == {"attribute"}
    assert rules(src, extra_chains=("torch.sigmoid",)) == set()


def test_inline_asm_only_when_the_task_allows_it():
    src = "@triton.jit\ndef k(X):\n    tl.inline_asm_elementwise('', '=r,r', [X], dtype=tl.int32, is_pure=True, pack=1)\n"
    assert rules(src) == {"triton-api"}
    assert rules(src, allow_inline_asm=True) == set()


def test_scalar_arguments_may_be_branched_on_tensors_may_not():
    src = "def f(x, o, n, scale):\n    if n > 0 and scale != 1.0:\n        return 1\n"
    assert violations(src) == []
    assert rules(src.replace("n > 0", "o > 0")) == {"host-read"}
    # positional parameters are matched by position, so renaming one does not make it a scalar
    renamed = "def f(a, b, c, d):\n    if b > 0:\n        return 1\n"
    assert rules(renamed) == {"host-read"}


def test_the_instruction_states_the_allowlist():
    text = summary()
    for needle in ("torch, triton, triton.language", "getattr", "reading tensor values on the host", "device"):
        assert needle in text
    assert text in load_task("extend_attention").instruction_text()
