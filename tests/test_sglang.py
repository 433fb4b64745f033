"""Is a candidate a drop-in for SGLang? Checked against SGLang's own `extend_attention_fwd` call.

SGLang's kernel module and its Triton backend are read from the pinned sglang wheel, fetched from the
package registry at test time (never committed, never imported: parsed). Checked: SGLang's signature
starts with the task's pinned one; every call the backend makes binds to the candidate's signature;
each call in the task's scope is made for real, under the Triton interpreter, with the arguments the
backend passes (the same positional count, the same keywords, the values that switch out-of-scope
options off) and must match the reference; and the README's lines that install a kernel in SGLang
make the backend's import resolve to it. Skipped, with the reason, when the wheel cannot be fetched.

    KOPT_SGLANG_KERNEL=path/to/best.py python -m pytest tests/test_sglang.py   # check your own kernel
    KOPT_SGLANG_WHEEL=path/to/sglang-*.whl ...                                 # offline, a wheel at hand
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from kopt.verifier.task import load_task
from tests.conftest import REPO

SGLANG = "0.5.23"  # the version docs/extend_attention.md's contract was checked against
KERNEL_MODULE = "sglang.kernels.ops.attention.extend_attention"
BACKEND_MODULE = "sglang.srt.layers.attention.triton_backend"
ENTRY = "extend_attention_fwd"
# Keywords the backend passes that this task leaves out; it passes them with the values that switch them off
# (SGLang's own defaults), or as hints about the inputs. Any other keyword is out of the task's scope.
OFF = ("sinks", "window_kv_offsets", "xai_temperature_len", "page_size", "score_mod", "aux_tensors")
HINTS = ("extend_seq_lens_cpu", "identity_kv_indices")
DESCALES = ("k_scale", "v_scale")  # the backend passes k_descale/v_descale: 1.0 without an fp8 KV cache


def module_file(module: str) -> str:
    return module.replace(".", "/") + ".py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    given = os.environ.get("KOPT_SGLANG_WHEEL")
    if given:
        return zipfile.ZipFile(given)
    where = tmp_path_factory.mktemp("sglang-wheel")
    cmd = [sys.executable, "-m", "pip", "download", f"sglang=={SGLANG}", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.11", "--implementation", "cp", "--platform", "manylinux_2_34_x86_64",
           "--quiet", "--disable-pip-version-check", "-d", str(where)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip(f"fetching the sglang=={SGLANG} wheel from the package registry took over 10 minutes; set "
                    "KOPT_SGLANG_WHEEL to a downloaded wheel to run this check")
    found = sorted(where.glob("sglang-*.whl"))
    if done.returncode != 0 or not found:
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        pytest.skip(f"cannot fetch the sglang=={SGLANG} wheel from the package registry (offline?): {tail}; set "
                    "KOPT_SGLANG_WHEEL to a downloaded wheel to run this check")
    return zipfile.ZipFile(found[0])


def parsed(wheel: zipfile.ZipFile, module: str) -> ast.Module:
    return ast.parse(wheel.read(module_file(module)).decode())


@dataclass
class Site:
    """One call of extend_attention_fwd in SGLang's backend: how many arguments by position, which by name."""

    line: int
    positional: int
    keywords: list[str]

    @property
    def in_scope(self) -> bool:
        return not set(self.keywords) - set(load_task("extend_attention").config.signature) - set(OFF) - set(HINTS)


def call_sites(backend: ast.Module) -> list[Site]:
    """Direct calls of self.extend_attention_fwd, and calls of a method that forwards its *args/**kwargs
    to it (minus that method's own leading parameters)."""
    forwarders: dict[str, int] = {}
    for fn in ast.walk(backend):
        if isinstance(fn, ast.FunctionDef):
            for call in ast.walk(fn):
                if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == ENTRY and any(
                        isinstance(a, ast.Starred) for a in call.args):
                    forwarders[fn.name] = len(fn.args.args) - 1  # (self)
    sites = []
    for call in ast.walk(backend):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
            continue
        name = call.func.attr
        if name == ENTRY and not any(isinstance(a, ast.Starred) for a in call.args):
            sites.append(Site(call.lineno, len(call.args), [k.arg for k in call.keywords]))
        elif name in forwarders:
            sites.append(Site(call.lineno, len(call.args) - forwarders[name], [k.arg for k in call.keywords]))
    assert all(None not in s.keywords for s in sites), "a call passes **kwargs: its keywords cannot be read"
    return sites


def sglang_parameters(kernel: ast.Module) -> list[tuple[str, object]]:
    """(name, default) of SGLang's own extend_attention_fwd; the default is ... when there is none."""
    fn = next(n for n in kernel.body if isinstance(n, ast.FunctionDef) and n.name == ENTRY)
    args = fn.args.args
    defaults = [...] * (len(args) - len(fn.args.defaults)) + [ast.literal_eval(d) for d in fn.args.defaults]
    return [(a.arg, d) for a, d in zip(args, defaults)]


def kernels_to_check() -> list[Path]:
    own = os.environ.get("KOPT_SGLANG_KERNEL")
    return [Path(own).resolve()] if own else [load_task("extend_attention").baseline_path]


# Runs in a fresh interpreter (TRITON_INTERPRET is read when triton is imported): binds every call site to
# the candidate's signature, then makes each in-scope call on a CPU case and compares with the reference.
CALLER = r'''
import inspect, json, sys, importlib.util
import torch
plan = json.loads(sys.stdin.read())
from kopt.verifier.task import load_task
task = load_task("extend_attention")
spec = importlib.util.spec_from_file_location("kopt_candidate", plan["kernel"])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
fn = getattr(module, "extend_attention_fwd")
signature = inspect.signature(fn)
reference = task.load_reference()
tol = task.config.tolerance["float32"]
case = next(c for c in task.config.cases if c.id == plan["case"])
out = []
for site in plan["sites"]:
    names = [n for n, _ in plan["parameters"]]
    try:
        signature.bind(*range(site["positional"]), **{k: None for k in site["keywords"]})
    except TypeError as exc:
        out.append({"line": site["line"], "error": f"does not bind: {exc}"}); continue
    if not site["in_scope"]:
        out.append({"line": site["line"], "error": None, "ran": False}); continue
    inputs = reference.make_inputs(case.params, torch.float32, 3, "cpu")
    defaults = dict(plan["parameters"])
    lens = (inputs["qo_indptr"][1:] - inputs["qo_indptr"][:-1]).tolist()
    def value(name):
        if name in inputs:
            return inputs[name]
        if name in plan["descales"]:
            return 1.0
        if name == "extend_seq_lens_cpu":
            return lens
        return defaults[name]
    args = [value(n) for n in names[:site["positional"]]]
    kwargs = {k: value(k) for k in site["keywords"]}
    expected = reference.reference(inputs)["o_extend"]
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        out.append({"line": site["line"], "error": f"raised {type(exc).__name__}: {exc}"}); continue
    got = inputs["o_extend"].double()
    rel = float((got - expected).norm() / expected.norm())
    ok = rel <= tol.rel_l2 and bool(torch.allclose(got, expected, atol=tol.atol, rtol=tol.rtol))
    out.append({"line": site["line"], "error": None if ok else f"wrong output: rel. L2 {rel:.3g}", "ran": True})
print(json.dumps(out))
'''


def test_sglangs_signature_is_the_pinned_one(wheel):
    names = [n for n, _ in sglang_parameters(parsed(wheel, KERNEL_MODULE))]
    pinned = load_task("extend_attention").config.signature
    assert names[:len(pinned)] == list(pinned), "SGLang's extend_attention_fwd changed: update the task contract"


@pytest.mark.parametrize("kernel", kernels_to_check(), ids=lambda p: p.name)
def test_a_candidate_takes_sglangs_own_calls(wheel, kernel):
    sites = call_sites(parsed(wheel, BACKEND_MODULE))
    main = [s for s in sites if "sinks" in s.keywords]  # forward_extend: the path every prefill takes
    assert main and all(s.in_scope for s in main), f"the backend's extend call is not where it was: {sites}"
    plan = {"kernel": str(kernel), "case": "C1", "sites": [dict(asdict(s), in_scope=s.in_scope) for s in sites],
            "parameters": [(n, None if d is ... else d) for n, d in sglang_parameters(parsed(wheel, KERNEL_MODULE))],
            "descales": DESCALES}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}
    env.update(TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", CALLER], input=json.dumps(plan), capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    failed = {r["line"]: r["error"] for r in results if r["error"]}
    assert not failed, f"{kernel} is not call-compatible with SGLang {SGLANG}'s backend (line: problem): {failed}"
    ran = [r["line"] for r in results if r.get("ran")]
    assert {s.line for s in main} <= set(ran)


def readme_patch() -> str:
    """The lines the README appends to SGLang's kernel module (between `cat >> "$F" <<'EOF'` and EOF)."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "cat >> \"$F\" <<'EOF'"), None)
    assert start is not None, "README's 'Using the result in SGLang' lost its install lines"
    indent = lines[start][:len(lines[start]) - len(lines[start].lstrip())]  # the code block sits in a list
    end = lines.index(indent + "EOF", start)
    return "\n".join(line[len(indent):] for line in lines[start + 1:end]) + "\n"


def test_the_readme_lines_make_sglangs_import_resolve_to_the_kernel(wheel, tmp_path):
    backend = parsed(wheel, BACKEND_MODULE)
    imports = [n for n in ast.walk(backend) if isinstance(n, ast.ImportFrom) and n.module == KERNEL_MODULE
               and any(a.name == ENTRY for a in n.names)]
    assert imports, f"SGLang's Triton backend no longer imports {ENTRY} from {KERNEL_MODULE}"
    best = tmp_path / "best.py"
    best.write_text(load_task("extend_attention").baseline_path.read_text())
    snippet = readme_patch()
    assert "/opt/kopt_best.py" in snippet
    snippet = snippet.replace("/opt/kopt_best.py", str(best))
    patched = wheel.read(module_file(KERNEL_MODULE)).decode() + "\n" + snippet
    compile(patched, module_file(KERNEL_MODULE), "exec")  # the appended module still compiles
    namespace = {"extend_attention_fwd": "SGLang's own"}  # what the module defined before the lines
    exec(compile(snippet, "README", "exec"), namespace)  # noqa: S102 (our README's own lines)
    installed = namespace[ENTRY]
    assert callable(installed) and installed.__code__.co_filename == str(best)
