"""The static gate: an AST check of a candidate's source before anything runs.

Fail closed: anything the gate cannot vouch for is rejected, naming the line and the rule, so
the agent can fix it. The gate is the first layer; the child process, the clean environment
and the correctness protocol are the others.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

DEFAULT_IMPORTS = frozenset({"torch", "triton", "triton.language", "math", "typing", "functools", "__future__"})

# Builtins that open the door to I/O, introspection, dynamic code or identity-keyed caches.
BANNED_BUILTINS = frozenset({
    "exec", "eval", "compile", "__import__", "open", "getattr", "setattr", "delattr", "hasattr",
    "globals", "locals", "vars", "dir", "breakpoint", "input", "memoryview", "type", "object",
    "super", "id", "hash", "classmethod", "staticmethod", "property", "__builtins__", "exit", "quit",
})

# Attribute names refused on anything that is not triton.language: modules reachable as
# attributes (torch.os), I/O, streams and graphs, host syncs, caches, torch compute that would
# replace the Triton kernel, and raw storage access.
BANNED_ATTRIBUTES = {
    "modules": {"os", "sys", "subprocess", "builtins", "importlib", "ctypes", "io", "pathlib",
                "shutil", "socket", "threading", "multiprocessing", "signal", "gc", "inspect",
                "pickle", "marshal", "types", "asyncio", "runtime", "testing", "compiler", "knobs",
                "backends", "hub", "ops", "library", "utils", "classes", "distributed", "fx",
                "jit", "_dynamo", "profiler", "cuda_graphs"},
    "i/o": {"save", "load", "from_file", "fromfile", "tofile", "to_file"},
    "streams and graphs": {"Stream", "stream", "Event", "graph", "graphs", "CUDAGraph",
                           "set_stream", "ExternalStream", "current_stream", "default_stream",
                           "make_graphed_callables", "cudart"},
    "host synchronisation": {"synchronize", "item", "tolist", "cpu", "numpy"},
    "caching": {"lru_cache", "cache", "cached_property", "get_type_hints", "get_annotations", "data_ptr", "storage", "untyped_storage",
                "set_", "resize_", "share_memory_", "pin_memory"},
    "torch compute instead of a Triton kernel": {
        "nn", "matmul", "mm", "bmm", "baddbmm", "addmm", "addbmm", "einsum", "softmax",
        "log_softmax", "scaled_dot_product_attention", "tensordot", "linalg", "special", "fft",
        "cdist", "compile", "vmap", "func", "autograd"},
}
_ATTRIBUTE_RULE = {name: kind for kind, names in BANNED_ATTRIBUTES.items() for name in names}

# Host code (functions that are not @triton.jit) may only validate arguments, allocate, view and
# launch: anything else could compute the answer with torch instead of the Triton kernel.
HOST_TORCH = frozenset({
    "float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
    "float8_e4m3fn", "float8_e5m2", "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "full",
    "full_like", "Tensor", "dtype", "device", "Size", "is_tensor", "cuda"})
HOST_TORCH_CUDA = frozenset({"get_device_capability", "current_device", "get_device_properties", "is_available",
                             "device_count"})
HOST_METHODS = frozenset({
    "shape", "stride", "size", "dtype", "device", "numel", "dim", "ndim", "is_contiguous", "contiguous",
    "view", "reshape", "flatten", "unsqueeze", "squeeze", "transpose", "permute", "expand", "element_size",
    "itemsize", "is_cuda", "is_floating_point", "new_empty", "new_zeros", "new_full", "zero_", "fill_", "to",
    "multi_processor_count", "major", "minor", "items", "keys", "values", "get", "append", "format", "join",
    "startswith", "endswith", "lower", "upper"})
JIT_DECORATORS = frozenset({"triton.jit", "triton.autotune", "triton.heuristics"})

TRITON_ALLOWED = frozenset({"jit", "cdiv", "next_power_of_2", "language", "Config", "autotune",
                            "heuristics", "constexpr"})
INLINE_ASM = "inline_asm_elementwise"
# triton.language re-exports modules (tl.core holds builtins, inspect, os through knobs...): only these
# submodules may be named, and no attribute that is a module may be reached through tl.
TL_SUBMODULES = frozenset({"triton.language.math", "triton.language.extra", "triton.language.extra.libdevice",
                           "triton.language.extra.cuda", "triton.language.extra.hip"})
TL_EXTRA = "triton.language.extra."
TL_BANNED = frozenset({"core", "semantic", "standard", "target_info", "random", "module", "pkgutil"})


@dataclass(frozen=True)
class Violation:
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: [{self.rule}] {self.message}"


def check_source(source: str, extra_imports: tuple[str, ...] = (), allow_inline_asm: bool = False,
                 filename: str = "kernel.py") -> list[Violation]:
    """Return every violation in `source` (empty list: the gate passes)."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        return [Violation(exc.lineno or 0, "syntax", f"{exc.msg} (col {exc.offset})")]
    gate = _Gate(DEFAULT_IMPORTS | set(extra_imports), allow_inline_asm)
    gate.check_module(tree)
    return sorted(gate.violations, key=lambda v: (v.line, v.rule))


class _Gate(ast.NodeVisitor):
    def __init__(self, allowed_imports: frozenset[str] | set[str], allow_inline_asm: bool):
        self.allowed_imports = allowed_imports
        self.allow_inline_asm = allow_inline_asm
        self.aliases: dict[str, str] = {}  # local name -> module it is bound to
        self.violations: list[Violation] = []
        self.in_jit = False

    def fail(self, node: ast.AST, rule: str, message: str) -> None:
        self.violations.append(Violation(getattr(node, "lineno", 0), rule, message))

    # ---- module level: imports, constants, function definitions, a docstring; nothing else
    def check_module(self, tree: ast.Module) -> None:
        for index, stmt in enumerate(tree.body):
            if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.visit(stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                value = stmt.value
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                if not all(isinstance(t, ast.Name) for t in targets):
                    self.fail(stmt, "module-state", "module-level assignments may only bind plain names")
                if value is None or not self.is_constant(value):
                    self.fail(stmt, "module-state", "module-level values must be constants (numbers, "
                              "strings, tuples of them, tl dtypes): mutable module state could carry "
                              "results between calls")
                else:
                    self.visit(value)
            elif isinstance(stmt, ast.Expr) and index == 0 and isinstance(stmt.value, ast.Constant):
                continue  # docstring
            else:
                self.fail(stmt, "module-code", f"{type(stmt).__name__} at module level: only imports, "
                          "constants and function definitions are allowed")

    def is_constant(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Tuple):
            return all(self.is_constant(e) for e in node.elts)
        if isinstance(node, ast.UnaryOp):
            return self.is_constant(node.operand)
        if isinstance(node, ast.BinOp):
            return self.is_constant(node.left) and self.is_constant(node.right)
        if isinstance(node, ast.Name):
            return True  # another constant or an imported module
        if isinstance(node, ast.Attribute):
            return (self.root_module(node.value) or "").split(".")[0] in {"triton", "math", "torch"}
        if isinstance(node, ast.Call):  # tl.constexpr(2), math.log2(math.e), triton.next_power_of_2(80)
            owner = (self.root_module(node.func) or "").rsplit(".", 1)[0]
            return (owner in {"triton.language", "math", "triton"}
                    and all(self.is_constant(a) for a in node.args)
                    and all(self.is_constant(k.value) for k in node.keywords))
        return False

    def root_module(self, node: ast.AST) -> str | None:
        """The dotted module path an attribute chain names (tl.float32 -> triton.language)."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        return ".".join([self.aliases[node.id], *reversed(parts)])

    # ---- imports
    def import_allowed(self, module: str) -> bool:
        return module in self.allowed_imports or module in TL_SUBMODULES or module.startswith(TL_EXTRA)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not self.import_allowed(alias.name):
                self.fail(node, "import", f"import of {alias.name!r} is not allowed (allowed: "
                          f"{', '.join(sorted(self.allowed_imports - {'__future__'}))})")
            elif alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                self.aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or not self.import_allowed(module):
            self.fail(node, "import", f"import from {module or '.'!r} is not allowed")
            return
        for alias in node.names:
            full = f"{module}.{alias.name}"
            if alias.name == "*":
                self.fail(node, "import", "star imports are not allowed: import names explicitly")
            elif module == "triton" and alias.name not in TRITON_ALLOWED:
                self.fail(node, "triton-api", f"triton.{alias.name} is not allowed")
            elif self.import_allowed(full):
                self.aliases[alias.asname or alias.name] = full
            else:
                self.check_attribute_name(node, alias.name, module)

    # ---- functions
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        args = node.args
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            if not self.is_constant(default):
                self.fail(default, "mutable-default", "default argument values must be constants")
        annotations = [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs
                       + [args.vararg, args.kwarg] if a is not None and a.annotation is not None]
        for annotation in annotations + ([node.returns] if node.returns else []):
            if not self.is_annotation(annotation):
                self.fail(annotation, "annotation", "annotations may only name types (an annotation object "
                          "lives as long as the function: it could carry state between calls)")
        names = {self.root_module(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list}
        if names - JIT_DECORATORS:
            self.fail(node, "decorator", "only @triton.jit, @triton.autotune and @triton.heuristics are allowed")
        # decorators, defaults and annotations run on the host, in the enclosing context
        for child in node.decorator_list + args.defaults + [d for d in args.kw_defaults if d] + annotations:
            self.visit(child)
        outer, self.in_jit = self.in_jit, self.in_jit or bool(names & JIT_DECORATORS)
        for stmt in node.body:
            self.visit(stmt)
        self.in_jit = outer

    def is_annotation(self, node: ast.AST) -> bool:
        if isinstance(node, (ast.Name, ast.Attribute)) or (isinstance(node, ast.Constant) and
                                                            isinstance(node.value, (str, type(None)))):
            return True
        if isinstance(node, ast.Subscript):
            return self.is_annotation(node.value) and self.is_annotation(node.slice)
        if isinstance(node, ast.Tuple):
            return all(self.is_annotation(e) for e in node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.is_annotation(node.left) and self.is_annotation(node.right)
        return False

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.fail(node, "async", "async functions are not allowed")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.fail(node, "class", "class definitions are not allowed (class attributes are state)")

    def visit_Global(self, node: ast.Global) -> None:
        self.fail(node, "global", "global statements are not allowed: no state between calls")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.fail(node, "global", "nonlocal statements are not allowed")

    def visit_Try(self, node: ast.AST) -> None:
        self.fail(node, "try", "try/except is not allowed: a failing kernel must fail, not fall back")

    visit_TryStar = visit_Try

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in node.args.defaults:
            if not self.is_constant(default):
                self.fail(default, "mutable-default", "default argument values must be constants")
        self.generic_visit(node)

    def visit_Yield(self, node: ast.AST) -> None:
        self.fail(node, "generator", "generators are not allowed (they keep state between calls)")

    visit_YieldFrom = visit_Yield
    visit_Await = visit_AsyncFunctionDef

    # ---- assignments: never into attributes (monkeypatching, hidden state)
    def check_targets(self, targets: list[ast.expr]) -> None:
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute) and sub is target or (
                        isinstance(sub, ast.Attribute) and isinstance(target, (ast.Tuple, ast.List))):
                    self.fail(target, "attribute-assignment", "assigning to attributes is not allowed "
                              "(monkeypatching or hidden state)")
                    break

    def visit_Assign(self, node: ast.Assign) -> None:
        self.check_targets(node.targets)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.check_targets([node.target])
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.check_targets([node.target])
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        self.check_targets(node.targets)
        self.generic_visit(node)

    # ---- names and attributes
    def visit_Name(self, node: ast.Name) -> None:
        if node.id in BANNED_BUILTINS:
            self.fail(node, "builtin", f"{node.id} is not allowed")
        elif node.id.startswith("__"):
            self.fail(node, "dunder", f"{node.id} is not allowed")

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.MatMult):
            self.fail(node, "matmul", "the @ operator is not allowed: use tl.dot inside a Triton kernel")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.check_attribute_name(node, node.attr, self.root_module(node.value))
        self.generic_visit(node)

    def check_attribute_name(self, node: ast.AST, attr: str, owner: str | None) -> None:
        kind = _ATTRIBUTE_RULE.get(attr)
        if attr.startswith("_"):
            self.fail(node, "private", f"private or dunder attribute .{attr} is not allowed")
        elif attr == INLINE_ASM:
            if not self.allow_inline_asm:
                self.fail(node, "inline-asm", "tl.inline_asm_elementwise needs a human review; this "
                          "task does not allow it")
        elif owner is not None and owner.startswith("triton.language"):
            if attr in TL_BANNED or kind == "modules":
                self.fail(node, "triton-api", f"{owner}.{attr} is not allowed (it reaches Python modules)")
        elif owner == "triton":
            if attr not in TRITON_ALLOWED:
                self.fail(node, "triton-api", f"triton.{attr} is not allowed (allowed: "
                          f"{', '.join(sorted(TRITON_ALLOWED))})")
        elif kind is not None:
            self.fail(node, "banned-attribute", f".{attr} is not allowed ({kind})")
        elif owner is not None and owner.split(".")[0] == "torch":
            self.check_torch(node, owner, attr)  # host or not: a decorator's lambda runs on the host
        elif self.in_jit or owner in {"math", "typing", "functools"}:
            return
        elif owner is None and attr not in HOST_METHODS:
            self.fail(node, "host-method", f".{attr}() is not allowed in host code (allowed: shape, stride, "
                      "dtype, view/reshape, allocation, .to, ...): compute in the Triton kernel")

    def check_torch(self, node: ast.AST, owner: str, attr: str) -> None:
        allowed = {"torch": HOST_TORCH, "torch.cuda": HOST_TORCH_CUDA, "torch.Tensor": HOST_METHODS}.get(owner)
        if allowed is None:
            self.fail(node, "host-torch", f"{owner} is not allowed")
        elif attr not in allowed:
            self.fail(node, "host-torch", f"{owner}.{attr} is not allowed: the host wrapper may only check "
                      "arguments, allocate, view and launch; compute in the Triton kernel")
