"""The static gate: every rule rejects what it should, names the line, and the baseline passes."""

from __future__ import annotations

import textwrap

import pytest

from kopt.verifier.gate import check_source
from tests.conftest import BASELINE

HEADER = "import torch\nimport triton\nimport triton.language as tl\n"


def rules(src: str, **kwargs) -> set[str]:
    return {v.rule for v in check_source(HEADER + textwrap.dedent(src), **kwargs)}


def test_baseline_passes_the_gate():
    assert check_source(BASELINE.read_text()) == []


@pytest.mark.parametrize("src, rule", [
    ("import os\n", "import"),
    ("import subprocess as sp\n", "import"),
    ("from ctypes import CDLL\n", "import"),
    ("from . import baseline\n", "import"),
    ("from torch import *\n", "import"),
    ("import importlib\n", "import"),
    ("_CACHE = {}\n", "module-state"),
    ("_CACHE = []\n", "module-state"),
    ("_BUF = torch.empty(10)\n", "module-state"),
    ("for i in range(3):\n    pass\n", "module-code"),
    ("if True:\n    X = 1\n", "module-code"),
    ("class Cache:\n    seen = {}\n", "class"),
    ("def f(x, cache={}):\n    return x\n", "mutable-default"),
    ("def f(x):\n    global Y\n    Y = x\n", "global"),
    ("def f(x):\n    try:\n        return x\n    except Exception:\n        return 0\n", "try"),
    ("def f(x):\n    return eval('x')\n", "builtin"),
    ("def f(x):\n    return open('/etc/passwd')\n", "builtin"),
    ("def f(x):\n    return getattr(torch, 'ops')\n", "builtin"),
    ("def f(x):\n    return __import__('os')\n", "builtin"),
    ("def f(x):\n    return x.__class__\n", "private"),
    ("def f(x):\n    return torch._C\n", "private"),
    ("def f(x):\n    torch.cuda.Event.elapsed_time = None\n", "attribute-assignment"),
    ("def f(x):\n    f.calls = 1\n", "attribute-assignment"),
    ("def f(x):\n    s = torch.cuda.Stream()\n", "banned-attribute"),
    ("def f(x):\n    return torch.cuda.graph\n", "banned-attribute"),
    ("def f(x):\n    return x.item()\n", "banned-attribute"),
    ("def f(x):\n    return x.cpu()\n", "banned-attribute"),
    ("def f(x):\n    return x.data_ptr()\n", "banned-attribute"),
    ("def f(x):\n    return torch.nn.functional.scaled_dot_product_attention(x, x, x)\n", "banned-attribute"),
    ("def f(x):\n    return torch.save(x, 'f')\n", "banned-attribute"),
    ("def f(x):\n    return torch.os.system('true')\n", "banned-attribute"),
    ("def f(x):\n    return triton.testing.do_bench(f)\n", "triton-api"),
    ("def f(x):\n    return triton.runtime.driver\n", "triton-api"),
    ("def f(x):\n    return x @ x\n", "matmul"),
    ("def f(x):\n    return x.exp().sum()\n", "host-method"),
    ("def f(x):\n    return torch.exp(x)\n", "host-torch"),
    ("def f(x):\n    return torch.cuda.set_stream(None)\n", "banned-attribute"),
    ("import functools\n@functools.lru_cache\ndef f(x):\n    return x\n", "banned-attribute"),
    ("import functools\n@functools.wraps(print)\ndef f(x):\n    return x\n", "decorator"),
    ("@triton.jit\ndef k(X):\n    tl.inline_asm_elementwise('mov.b32 $0, $1;', '=r,r', [X], dtype=tl.int32, is_pure=True, pack=1)\n",
     "inline-asm"),
    ("def f(x):\n    yield x\n", "generator"),
    ("async def f(x):\n    return x\n", "async"),
    ("def f(x:\n", "syntax"),
])
def test_rule_rejects(src, rule):
    assert rule in rules(src)


def test_violation_names_line_and_rule():
    (violation,) = check_source(HEADER + "\n\ndef f(x):\n    return x.item()\n")
    assert violation.line == 7
    assert str(violation).startswith("line 7: [banned-attribute]")


@pytest.mark.parametrize("src", [
    "BLOCK_M = 128\nNAMES = ('a', 'b')\nLOG2E = 1.4426950408889634\nX = -1\n",
    "import math\nC = math.log2(math.e)\nD = tl.constexpr(4)\nT = tl.float16\n",
    "@triton.jit\ndef k(X, N: tl.constexpr):\n    x = tl.load(X + tl.arange(0, N))\n    tl.store(X, x.to(tl.float32).exp())\n",
    "def launch(q, o):\n    n, h, d = q.shape\n    grid = (n, h)\n    buf = torch.empty((n, h), dtype=torch.float32, device=q.device)\n"
    "    return triton.cdiv(n, 16), q.stride(0), q.view(n, -1), buf\n",
    "def f(q):\n    if q.dtype not in (torch.float16, torch.bfloat16):\n        raise NotImplementedError('dtype')\n",
    "@triton.autotune(configs=[triton.Config({'B': 16})], key=['n'])\n@triton.jit\ndef k(X, n, B: tl.constexpr):\n    pass\n",
])
def test_honest_code_passes(src):
    assert check_source(HEADER + src) == []


def test_inline_asm_allowed_when_the_task_says_so():
    src = "@triton.jit\ndef k(X):\n    tl.inline_asm_elementwise('', '=r,r', [X], dtype=tl.int32, is_pure=True, pack=1)\n"
    assert rules(src) == {"inline-asm"}
    assert rules(src, allow_inline_asm=True) == set()


def test_task_can_extend_the_import_allowlist():
    assert rules("import numpy\n") == {"import"}
    assert rules("import numpy\n", extra_imports=("numpy",)) == set()
