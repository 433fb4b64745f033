"""The static gate's rules for a file's top level: only a docstring, allowed imports, constants
and function definitions (@triton.jit kernels with their autotune/heuristics decorators, host
functions), and the exact attribute chains a name may reach (verifier/allowlist.py).

`Module` also holds what the later checks share: the aliases, constants and functions of the
file, each host function's parameter kinds and the violations found (see verifier/gate.py).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from kopt.verifier import allowlist as A
from kopt.verifier.kinds import CONFIGS, META, TENSOR, VALUE, all_args


@dataclass(frozen=True)
class Violation:
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: [{self.rule}] {self.message}"


@dataclass
class Options:
    extra_imports: frozenset[str] = frozenset()
    extra_chains: frozenset[str] = frozenset()
    allow_inline_asm: bool = False
    entry_point: str | None = None
    signature: tuple[str, ...] = ()  # the entry point's parameters in order (task.toml)
    scalar_args: frozenset[str] = frozenset()  # which of them are Python scalars, not tensors


class Module:
    """One file's top level, and the facts about it that the host and kernel checks share."""

    def __init__(self, tree: ast.Module, opts: Options):
        self.tree, self.opts = tree, opts
        self.violations: list[Violation] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted module or object path
        self.constants: set[str] = set()
        self.jit: dict[str, ast.FunctionDef] = {}
        self.host: dict[str, ast.FunctionDef] = {}
        self.roles: dict[str, str] = {}  # host function -> "grid" | "prune" | "hook" | "heuristic" | "alloc"
        # host function -> kinds of its parameters, joined over the calls of this pass; the analysis reads
        # the previous pass's (`params_seen`), so a helper called from a helper is not stuck at "tensor"
        self.params: dict[str, list[str]] = {}
        self.params_seen: dict[str, list[str]] = {}
        self.returns: dict[str, str] = {}
        self.kernel_params: dict[str, dict[str, str]] = {}  # jit kernel -> param -> kind (from launches)
        self.kernel_params_seen: dict[str, dict[str, str]] = {}
        self.constexprs: set[str] = set()  # constexpr parameter names and autotune config keys
        self.deferred: list[tuple[ast.Lambda, str]] = []

    def fail(self, node: ast.AST, rule: str, message: str) -> None:
        self.violations.append(Violation(getattr(node, "lineno", 0), rule, message))

    # ---- module level
    def check(self) -> list[Violation]:
        """The top-level rules; the host and kernel checks run next (verifier/gate.py)."""
        body = self.tree.body
        for index, stmt in enumerate(body):
            if isinstance(stmt, ast.Expr) and index == 0 and isinstance(stmt.value, ast.Constant):
                continue  # docstring
            if isinstance(stmt, ast.Import):
                self.imports(stmt)
            elif isinstance(stmt, ast.ImportFrom):
                self.import_from(stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                self.module_constant(stmt)
            elif isinstance(stmt, ast.FunctionDef):
                self.register(stmt)
            else:
                what = {ast.ClassDef: "class definitions (class attributes are state)", ast.Try: "try/except",
                        ast.AsyncFunctionDef: "async functions"}.get(type(stmt), f"{type(stmt).__name__} statements")
                self.fail(stmt, "module-code", f"{what} at module level: only a docstring, imports, constants and "
                          "function definitions are allowed")
        self.no_shadowing()
        for fn in self.jit.values():
            for arg in fn.args.args:
                if arg.annotation is not None and self.chain(arg.annotation) in {"triton.language.constexpr"}:
                    self.constexprs.add(arg.arg)
        for fn in list(self.jit.values()) + list(self.host.values()):
            self.decorators(fn)
        return self.violations

    def no_shadowing(self) -> None:
        """An imported name is never rebound: the checks resolve `torch.float` or `math.exp` through the
        import, so a parameter named `torch` (a tensor) would have its methods read as the library's (an
        independent panel laundered tensors into plain values so)."""
        for node in ast.walk(self.tree):
            names: list[tuple[ast.AST, str]] = []
            if isinstance(node, ast.arg):
                names.append((node, node.arg))
            elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                names.append((node, node.id))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append((node, node.name))
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                names += [(node, name) for name in node.names]
            elif isinstance(node, ast.ExceptHandler) and node.name:
                names.append((node, node.name))
            for where, name in names:
                if name in self.aliases:
                    self.fail(where, "shadow", f"{name!r} is the import of {self.aliases[name]}: a parameter, "
                              "variable or function of that name would be read as the module; rename it")

    def imports(self, node: ast.Import) -> None:
        for alias in node.names:
            if not self.import_allowed(alias.name):
                self.fail(node, "import", f"import of {alias.name!r} is not allowed (allowed: torch, triton, "
                          "triton.language, math, typing, functools)")
            elif alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                self.aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def import_from(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or not self.import_allowed(module):
            self.fail(node, "import", f"import from {module or '.'!r} is not allowed")
            return
        for alias in node.names:
            full = f"{module}.{alias.name}"
            if alias.name == "*":
                self.fail(node, "import", "star imports are not allowed: import names explicitly")
            elif module == "__future__":
                continue
            elif self.import_allowed(full) or self.chain_allowed(full) or (
                    module == "typing" and alias.name in A.TYPING_NAMES):
                self.aliases[alias.asname or alias.name] = full
            else:
                self.fail(node, "import", f"{full} is not on the allowlist")

    def import_allowed(self, module: str) -> bool:
        return module in A.IMPORTS or module in self.opts.extra_imports

    def module_constant(self, stmt: ast.Assign | ast.AnnAssign) -> None:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        if not all(isinstance(t, ast.Name) for t in targets) or stmt.value is None:
            self.fail(stmt, "module-state", "module-level assignments may only bind plain names to constants")
            return
        if not (self.is_constant(stmt.value) or self.is_config_list(stmt.value)):
            self.fail(stmt, "module-state", "module-level values must be constants (numbers, strings, tuples of "
                      "them, tl dtypes, tl.constexpr(...), triton.Config lists): mutable module state could carry "
                      "results between calls")
        for t in targets:
            if t.id.startswith("__"):
                self.fail(t, "dunder", f"{t.id} is not allowed")
            self.constants.add(t.id)

    def is_constant(self, node: ast.AST) -> bool:
        """Immutable values only: numbers, strings, tuples, dtypes, tl.constexpr(...), triton.Config(...)
        (a module-level list is allowed only when it holds triton.Config objects: autotune's configs)."""
        if isinstance(node, ast.Constant):
            return not isinstance(node.value, bytes)
        if isinstance(node, ast.Tuple):
            return all(self.is_constant(e) for e in node.elts)
        if isinstance(node, ast.UnaryOp):
            return self.is_constant(node.operand)
        if isinstance(node, ast.BinOp):
            return self.is_constant(node.left) and self.is_constant(node.right)
        if isinstance(node, ast.Name):
            return node.id in self.constants
        if isinstance(node, ast.Attribute):
            chain = self.chain(node)
            return chain is not None and (chain in A.MATH_CHAINS or chain in A.TORCH_CHAINS and
                                          chain.split(".")[1] in A.DTYPE_NAMES or (
                chain.startswith("triton.language.") and chain.split(".")[-1] in A.TL_FUNCTIONS))
        if isinstance(node, ast.Call):
            chain = self.chain(node.func)
            if chain == "triton.Config":
                first = node.args[0] if node.args else None
                return len(node.args) == 1 and isinstance(first, ast.Dict) and all(
                    k is not None and self.is_constant(k) and self.is_constant(v)
                    for k, v in zip(first.keys, first.values)) and all(
                    k.arg in A.CONFIG_KWARGS - {"pre_hook"} and self.is_constant(k.value) for k in node.keywords)
            ok = chain in {"triton.language.constexpr", "triton.next_power_of_2", "triton.cdiv"} or (
                chain in A.MATH_CHAINS)
            return ok and all(self.is_constant(a) for a in node.args) and all(
                k.arg is not None and self.is_constant(k.value) for k in node.keywords)
        return False

    def is_config_list(self, node: ast.AST) -> bool:
        return isinstance(node, ast.List) and all(
            isinstance(e, ast.Call) and self.chain(e.func) == "triton.Config" and self.is_constant(e)
            for e in node.elts)

    def register(self, fn: ast.FunctionDef) -> None:
        names = [self.chain(d.func if isinstance(d, ast.Call) else d) for d in fn.decorator_list]
        if fn.name.startswith("__"):
            self.fail(fn, "dunder", f"{fn.name} is not allowed")
        bad = [d for d, n in zip(fn.decorator_list, names) if n not in A.DECORATORS]
        if bad:
            self.fail(bad[0], "decorator", "only @triton.jit, @triton.autotune and @triton.heuristics are allowed")
        if "triton.jit" in names:
            self.jit[fn.name] = fn
        elif names and not bad:
            self.fail(fn.decorator_list[0], "decorator", "@triton.autotune/@triton.heuristics must wrap a @triton.jit "
                      "function")
        else:
            self.host[fn.name] = fn
        for default in fn.args.defaults + [d for d in fn.args.kw_defaults if d is not None]:
            if not self.is_constant(default):
                self.fail(default, "mutable-default", "default argument values must be constants")
        for arg in all_args(fn) + ([fn.returns] if fn.returns else []):
            annotation = arg.annotation if isinstance(arg, ast.arg) else arg
            if annotation is not None and not self.is_annotation(annotation):
                self.fail(annotation, "annotation", "annotations may only name types (an annotation object lives "
                          "as long as the function: it could carry state between calls)")

    def is_annotation(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, type(None))):
            return True
        if isinstance(node, (ast.Name, ast.Attribute)):
            chain = self.chain(node)
            if isinstance(node, ast.Name) and node.id in {"int", "float", "bool", "str", "None"}:
                return True
            return chain is not None and (chain in A.TORCH_CHAINS or chain.startswith("typing.") or
                                          chain in {"triton.language.constexpr", "triton.language.tensor"})
        if isinstance(node, ast.Subscript):
            return self.is_annotation(node.value) and self.is_annotation(node.slice)
        if isinstance(node, ast.Tuple):
            return all(self.is_annotation(e) for e in node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.is_annotation(node.left) and self.is_annotation(node.right)
        return False

    def decorators(self, fn: ast.FunctionDef) -> None:
        for dec in fn.decorator_list:
            if not isinstance(dec, ast.Call):
                continue
            chain = self.chain(dec.func)
            if chain == "triton.autotune":
                for kw in dec.keywords:
                    if kw.arg not in A.AUTOTUNE_KWARGS:
                        self.fail(kw.value, "autotune", f"autotune option {kw.arg!r} is not allowed (allowed: "
                                  f"{', '.join(sorted(A.AUTOTUNE_KWARGS))})")
                    elif kw.arg == "configs":
                        self.configs(kw.value)
                    elif kw.arg == "prune_configs_by" and isinstance(kw.value, ast.Dict):
                        for k, v in zip(kw.value.keys, kw.value.values):
                            self.hook_ref(v, "prune" if isinstance(k, ast.Constant) and
                                          k.value == "early_config_prune" else "hook")
                    elif kw.arg in {"pre_hook", "post_hook"}:
                        self.hook_ref(kw.value, "hook")
                    elif not (self.is_constant(kw.value) or isinstance(kw.value, ast.List) and all(
                            self.is_constant(e) for e in kw.value.elts)):
                        self.fail(kw.value, "autotune", f"autotune option {kw.arg!r} must be a constant")
            elif chain == "triton.heuristics":
                values = dec.args[0] if dec.args else None
                if not isinstance(values, ast.Dict) or dec.keywords or len(dec.args) != 1:
                    self.fail(dec, "heuristics", "use @triton.heuristics({'NAME': lambda args: ...})")
                    continue
                for key, value in zip(values.keys, values.values):
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        self.constexprs.add(key.value)
                    self.hook_ref(value, "heuristic")
            elif chain == "triton.jit" and (dec.args or any(k.arg not in {"do_not_specialize", "debug"}
                                                            for k in dec.keywords)):
                self.fail(dec, "decorator", "@triton.jit accepts only do_not_specialize")

    def configs(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name) and node.id in self.constants:
            node = next((s.value for s in self.tree.body if isinstance(s, ast.Assign) and
                         any(isinstance(t, ast.Name) and t.id == node.id for t in s.targets)), node)
        elts = node.elts if isinstance(node, (ast.List, ast.Tuple)) else None
        if elts is None:
            if not isinstance(node, ast.ListComp):
                self.fail(node, "autotune", "configs must be a list of triton.Config(...)")
            return
        for config in elts:
            if not (isinstance(config, ast.Call) and self.chain(config.func) == "triton.Config"):
                self.fail(config, "autotune", "configs must be a list of triton.Config(...)")
                continue
            if config.args and isinstance(config.args[0], ast.Dict):
                for key in config.args[0].keys:
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        self.constexprs.add(key.value)
            for kw in config.keywords:
                if kw.arg not in A.CONFIG_KWARGS:
                    self.fail(kw, "autotune", f"triton.Config option {kw.arg!r} is not allowed")
                elif kw.arg == "pre_hook":
                    self.hook_ref(kw.value, "hook")

    def hook_ref(self, node: ast.AST, role: str) -> None:
        """A function handed to Triton (hook, pruner, heuristic): its parameters get the role's kinds."""
        if isinstance(node, ast.Name) and node.id in self.host:
            self.roles[node.id] = role
        elif isinstance(node, ast.Lambda):
            self.deferred.append((node, role))  # checked once launches have typed the kernel's parameters
        elif not (isinstance(node, ast.Constant) and node.value is None):
            self.fail(node, "hook", "hooks, pruners and heuristics must be lambdas or functions of this file")

    def role_kind(self, name: str, index: int) -> str:
        role = self.roles.get(name)
        if role == "prune":
            return CONFIGS if index == 0 else META
        if role in {"hook", "heuristic", "grid"}:
            return META
        if role == "alloc":
            return VALUE
        return "unset"

    def entry_kind(self, fn: ast.FunctionDef, index: int, arg: ast.arg) -> str:
        sig = self.opts.signature
        positional = fn.args.posonlyargs + fn.args.args
        if arg is fn.args.vararg or arg is fn.args.kwarg:
            return TENSOR  # whatever else a caller passes: may be a tensor
        name = sig[index] if arg in positional and index < len(sig) else arg.arg
        if not sig:
            return TENSOR
        return VALUE if name in self.opts.scalar_args or name not in sig else TENSOR

    # ---- names
    def chain(self, node: ast.AST) -> str | None:
        """The dotted path an attribute chain names when it starts at an import (tl.exp -> triton.language.exp)."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        return ".".join([self.aliases[node.id], *reversed(parts)])

    def chain_allowed(self, chain: str, jit: bool = False) -> bool:
        if chain in self.opts.extra_chains:
            return True
        head, _, last = chain.rpartition(".")
        if head in {"triton.language"}:
            return last in A.TL_FUNCTIONS or (last == A.TL_INLINE_ASM and self.opts.allow_inline_asm)
        if head == "triton.language.math":
            return last in A.TL_MATH
        if head.endswith("libdevice") and head.startswith("triton.language.extra"):
            return last in A.LIBDEVICE
        if jit:
            return False
        return chain in A.TORCH_CHAINS or chain in A.TRITON_CHAINS or chain in A.MATH_CHAINS or (
            head == "typing" and last in A.TYPING_NAMES)

    def module_prefix(self, chain: str) -> bool:
        """A module on the way to an allowed name (tl.extra.cuda in tl.extra.cuda.libdevice.tanh)."""
        return chain in A.IMPORTS or chain in {"triton.tools", "triton.tools.tensor_descriptor",
                                               "triton.tools.tensor_descriptor.TensorDescriptor"}
