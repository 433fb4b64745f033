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
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from kopt.verifier import allowlist as A

VALUE, TENSOR, META, CONFIG, CONFIGS, FUNC, MODULE = "value", "tensor", "meta", "config", "configs", "func", "module"


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
    return sorted(set(_Module(tree, opts).check()), key=lambda v: (v.line, v.rule, v.message))


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


class _Module:
    def __init__(self, tree: ast.Module, opts: Options):
        self.tree, self.opts = tree, opts
        self.violations: list[Violation] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted module or object path
        self.constants: set[str] = set()
        self.jit: dict[str, ast.FunctionDef] = {}
        self.host: dict[str, ast.FunctionDef] = {}
        self.roles: dict[str, str] = {}  # host function -> "grid" | "prune" | "hook" | "heuristic" | "alloc"
        self.params: dict[str, list[str]] = {}  # host function -> kinds of its parameters (joined over calls)
        self.returns: dict[str, str] = {}
        self.kernel_params: dict[str, dict[str, str]] = {}  # jit kernel -> param -> kind (from launches)
        self.constexprs: set[str] = set()  # constexpr parameter names and autotune config keys
        self.deferred: list[tuple[ast.Lambda, str]] = []

    def fail(self, node: ast.AST, rule: str, message: str) -> None:
        self.violations.append(Violation(getattr(node, "lineno", 0), rule, message))

    # ---- module level
    def check(self) -> list[Violation]:
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
        for fn in self.jit.values():
            for arg in fn.args.args:
                if arg.annotation is not None and self.chain(arg.annotation) in {"triton.language.constexpr"}:
                    self.constexprs.add(arg.arg)
        for fn in list(self.jit.values()) + list(self.host.values()):
            self.decorators(fn)
        # host functions: iterate the kind analysis to a fixpoint over call sites, then report
        for name, fn in self.host.items():
            self.params[name] = [self.entry_kind(fn, i, a) if name == self.opts.entry_point else
                                 self.role_kind(name, i) for i, a in enumerate(_all_args(fn))]
        for _ in range(6):
            before = (repr(self.params), repr(self.returns), repr(self.kernel_params))
            for name, fn in self.host.items():
                _Host(self, fn, report=False).run()
            if before == (repr(self.params), repr(self.returns), repr(self.kernel_params)):
                break
        for fn in self.host.values():
            _Host(self, fn, report=True).run()
        for node, role in self.deferred:
            _Host(self, node, report=True, role=role).run()
        for fn in self.jit.values():
            _Jit(self, fn).run()
        return self.violations

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
        for arg in _all_args(fn) + ([fn.returns] if fn.returns else []):
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


def _all_args(fn: ast.FunctionDef | ast.Lambda) -> list[ast.arg]:
    a = fn.args
    return a.posonlyargs + a.args + ([a.vararg] if a.vararg else []) + a.kwonlyargs + ([a.kwarg] if a.kwarg else [])


def _join(*kinds: str) -> str:
    kinds = tuple(k for k in kinds if k != "unset")
    if not kinds:
        return "unset"
    if all(k == kinds[0] for k in kinds):
        return kinds[0]
    return TENSOR  # mixed: the unsafe one


@dataclass
class _Scope:
    kinds: dict[str, str] = field(default_factory=dict)
    local_made: set[str] = field(default_factory=set)  # containers and tensors this function allocated


class _Checker:
    """Shared by host and jit checks: statements and the forms they may take."""

    def __init__(self, mod: _Module, fn: ast.FunctionDef | ast.Lambda, report: bool):
        self.mod, self.fn, self.report = mod, fn, report
        self.scope = _Scope()

    def fail(self, node: ast.AST, rule: str, message: str) -> None:
        if self.report:
            self.mod.fail(node, rule, message)

    def name_rule(self, node: ast.Name) -> bool:
        if node.id.startswith("__"):
            self.fail(node, "dunder", f"{node.id} is not allowed")
            return False
        return True


class _Host(_Checker):
    """Host code: every expression gets a kind (value, tensor, meta dict, config, ...)."""

    def __init__(self, mod: _Module, fn: ast.FunctionDef | ast.Lambda, report: bool, role: str | None = None,
                 outer: dict[str, str] | None = None):
        super().__init__(mod, fn, report)
        self.role = role
        self.scope.kinds.update(outer or {})  # a lambda reads its enclosing function's locals
        name = getattr(fn, "name", None)
        kinds = mod.params.get(name) if name else None
        for i, arg in enumerate(_all_args(fn)):
            if kinds is not None and i < len(kinds) and kinds[i] != "unset":
                kind = kinds[i]
            elif name in mod.roles:
                kind = mod.role_kind(name, i)
            elif role is not None:
                kind = CONFIGS if role == "prune" and i == 0 else META
            else:
                kind = TENSOR
            self.scope.kinds[arg.arg] = TENSOR if kind == "unset" else kind
            if arg.arg.startswith("__"):
                self.fail(arg, "dunder", f"{arg.arg} is not allowed")

    def run(self) -> None:
        if isinstance(self.fn, ast.Lambda):
            self.expr(self.fn.body)
            return
        kind = "unset"
        for stmt in self.fn.body:
            kind = _join(kind, self.stmt(stmt) or "unset")
        self.mod.returns[self.fn.name] = kind if kind != "unset" else VALUE

    # ---- statements; returns the kind of any value returned
    def stmt(self, node: ast.stmt) -> str | None:
        if isinstance(node, ast.Expr):
            if isinstance(node.value, ast.Constant):
                return None  # docstring or a bare constant
            if not isinstance(node.value, ast.Call):
                self.fail(node, "statement", "an expression statement must be a call (a launch, an allocation, "
                          "a list append)")
            self.expr(node.value)
        elif isinstance(node, ast.Assign):
            kind = self.expr(node.value)
            for target in node.targets:
                self.assign(target, kind, node.value)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.assign(node.target, self.expr(node.value), node.value)
        elif isinstance(node, ast.AugAssign):
            if not isinstance(node.target, ast.Name):
                self.fail(node, "assignment", "augmented assignment only to plain local names")
                return None
            self.scope.kinds[node.target.id] = self.binop(node, self.expr(node.target), self.expr(node.value))
        elif isinstance(node, ast.If):
            self.condition(node.test)
            return _join(*(self.stmt(s) or "unset" for s in node.body + node.orelse))
        elif isinstance(node, ast.While):
            self.condition(node.test)
            return _join(*(self.stmt(s) or "unset" for s in node.body + node.orelse))
        elif isinstance(node, ast.For):
            self.assign(node.target, self.iterate(node.iter), node.iter)
            return _join(*(self.stmt(s) or "unset" for s in node.body + node.orelse))
        elif isinstance(node, ast.Return):
            return self.expr(node.value) if node.value is not None else VALUE
        elif isinstance(node, ast.Raise):
            self.raise_(node)
        elif isinstance(node, ast.Assert):
            self.condition(node.test)
            if node.msg is not None:
                self.expr(node.msg)
        elif isinstance(node, (ast.Pass, ast.Break, ast.Continue)):
            pass
        elif isinstance(node, ast.FunctionDef) and not node.decorator_list:
            self.nested(node)
        else:
            what = {ast.Try: "try/except is not allowed: a failing kernel must fail, not fall back",
                    ast.Global: "global statements are not allowed: no state between calls",
                    ast.Nonlocal: "nonlocal statements are not allowed", ast.With: "with statements are not allowed",
                    ast.Delete: "del is not allowed", ast.FunctionDef: "a nested function may not be decorated",
                    ast.ClassDef: "classes are not allowed",
                    ast.Import: "imports belong at module level", ast.ImportFrom: "imports belong at module level"}
            rule = "try" if isinstance(node, ast.Try) else "global" if isinstance(node, (ast.Global, ast.Nonlocal)) \
                else "statement"
            self.fail(node, rule, what.get(type(node), f"{type(node).__name__} statements are not allowed in host code"))
        return None

    def nested(self, node: ast.FunctionDef) -> None:
        """A local function (a grid function of META): made anew each call, so it keeps no state; its
        parameters are Triton's meta dict, and it reads the enclosing function's locals."""
        if not self.name_rule(ast.Name(id=node.name, lineno=node.lineno)):
            return
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            if not self.mod.is_constant(default):
                self.fail(default, "mutable-default", "default argument values must be constants")
        inner = _Host(self.mod, node, self.report, role="grid", outer=self.scope.kinds)
        for stmt in node.body:
            inner.stmt(stmt)
        self.scope.kinds[node.name] = FUNC
        self.scope.local_made.discard(node.name)

    def raise_(self, node: ast.Raise) -> None:
        exc = node.exc
        call = exc if isinstance(exc, ast.Call) else None
        name = (call.func if call else exc)
        if not (isinstance(name, ast.Name) and name.id in A.EXCEPTIONS) or node.cause is not None:
            self.fail(node, "raise", f"only raise {', '.join(sorted(A.EXCEPTIONS))}(message) is allowed")
            return
        for arg in (call.args if call else []):
            self.expr(arg)

    def assign(self, target: ast.AST, kind: str, value: ast.AST) -> None:
        if kind.startswith("items:") and not isinstance(target, (ast.Tuple, ast.List)):
            kind = TENSOR
        if isinstance(target, ast.Name):
            if not self.name_rule(target):
                return
            if target.id in self.mod.constants or target.id in self.mod.host or target.id in self.mod.jit:
                self.fail(target, "assignment", f"{target.id} is a module-level name: assign to a local instead")
            self.scope.kinds[target.id] = kind
            made = isinstance(value, (ast.List, ast.Dict, ast.ListComp, ast.DictComp, ast.Set)) or self.allocates(value)
            (self.scope.local_made.add if made else self.scope.local_made.discard)(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            if kind.startswith("items:") and len(target.elts) == 2:
                self.assign(target.elts[0], VALUE, value)
                self.assign(target.elts[1], kind[6:], value)
                return
            element = VALUE if kind == VALUE else TENSOR
            for elt in target.elts:
                self.assign(elt.value if isinstance(elt, ast.Starred) else elt, element, value)
        elif isinstance(target, ast.Subscript):
            base = target.value
            if not (isinstance(base, ast.Name) and base.id in self.scope.local_made):
                self.fail(target, "subscript-assignment", "assignment into a subscript is allowed only for "
                          "containers and tensors this function created")
            else:
                self.index(target.slice)
        elif isinstance(target, ast.Attribute):
            self.fail(target, "attribute-assignment", "assigning to attributes is not allowed (monkeypatching or "
                      "hidden state)")
        else:
            self.fail(target, "assignment", "only names, tuples of names and subscripts of local containers")

    def allocates(self, node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        chain = self.mod.chain(node.func)
        if chain in {"torch.empty", "torch.empty_like", "torch.zeros", "torch.zeros_like", "torch.empty_strided",
                     "torch.full", "torch.full_like", "torch.ones"}:
            return True
        return isinstance(node.func, ast.Attribute) and node.func.attr in A.TENSOR_ALLOC_ATTRS | {"copy"}

    def condition(self, node: ast.AST) -> None:
        kind = self.expr(node)
        if kind not in {VALUE, CONFIG}:
            self.fail(node, "host-read", "this condition may be a tensor: branching on it reads tensor values "
                      "on the host (a synchronisation, and a way to see the verifier's inputs); branch on shapes, "
                      "dtypes and scalar arguments only")

    def iterate(self, node: ast.AST) -> str:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "items" \
                and not node.args:
            inner = self.expr(node.func.value)
            return "items:" + (VALUE if inner == VALUE else TENSOR)  # (key, value) pairs: keys are strings
        kind = self.expr(node)
        if kind == CONFIGS:
            return CONFIG
        if kind == TENSOR:
            if isinstance(node, (ast.Tuple, ast.List)) or self.is_container(node):
                return TENSOR
            self.fail(node, "host-read", "iterating over a value that may be a tensor reads its values on the "
                      "host; iterate over shapes, ranges or tuples of tensors")
            return TENSOR
        return kind

    def is_container(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id in self.scope.local_made or isinstance(
            node, (ast.ListComp, ast.Tuple, ast.List))

    # ---- expressions
    def expr(self, node: ast.AST) -> str:
        method = getattr(self, f"x_{type(node).__name__}", None)
        if method is None:
            self.fail(node, "syntax", f"{type(node).__name__} expressions are not allowed in host code")
            return TENSOR
        return method(node)

    def x_Constant(self, node: ast.Constant) -> str:
        if isinstance(node.value, bytes):
            self.fail(node, "syntax", "bytes literals are not allowed")
        return VALUE

    def x_Name(self, node: ast.Name) -> str:
        if not self.name_rule(node):
            return TENSOR
        if node.id in self.scope.kinds:
            return self.scope.kinds[node.id]
        if node.id in self.mod.constants:
            return VALUE
        if node.id in self.mod.host or node.id in self.mod.jit:
            return FUNC
        if node.id in self.mod.aliases:
            target = self.mod.aliases[node.id]
            if self.mod.module_prefix(target) or target in {"triton", "torch", "math", "typing", "functools"}:
                return MODULE
            if self.mod.chain_allowed(target):
                return VALUE
        if node.id in A.HOST_BUILTINS:
            return VALUE if node.id in {"None", "True", "False"} else FUNC
        if node.id in A.EXCEPTIONS:
            return FUNC
        self.fail(node, "name", f"{node.id!r} is not allowed here (not a local, a parameter, a definition of this "
                  "file or an allowed import)")
        return TENSOR

    def x_Attribute(self, node: ast.Attribute) -> str:
        if node.attr.startswith("_"):
            self.fail(node, "private", f"private or dunder attribute .{node.attr} is not allowed")
            return TENSOR
        chain = self.mod.chain(node)
        if chain is not None:
            if self.mod.chain_allowed(chain):
                return VALUE  # a dtype, a constant or a library function (calls of chains are checked in x_Call)
            if self.mod.module_prefix(chain):
                return MODULE
            self.fail(node, "attribute", f"{chain} is not on the allowlist" + self.hint(chain))
            return TENSOR
        base = self.expr(node.value)
        attr = node.attr
        if base == TENSOR:
            if attr in A.TENSOR_VALUE_ATTRS:
                return VALUE if attr in {"shape", "dtype", "ndim", "itemsize"} else FUNC
            if attr in A.TENSOR_VIEW_ATTRS | A.TENSOR_ALLOC_ATTRS:
                return TENSOR if attr in {"T", "mT"} else FUNC
            if attr in A.TENSOR_FILL_ATTRS:
                if not (isinstance(node.value, ast.Name) and node.value.id in self.scope.local_made):
                    self.fail(node, "mutation", f".{attr}() only on tensors this function allocated")
                return FUNC
            self.fail(node, "host-method", f".{attr} is not allowed on a value that may be a tensor (allowed: "
                      "shape, stride(), size(), dtype, numel(), dim(), view/reshape/transpose/permute/..., "
                      "new_empty/new_zeros): compute in the Triton kernel" + self.hint(attr))
            return TENSOR
        if base in {VALUE, CONFIG, META}:
            if attr in A.MUTATING_VALUE_ATTRS and not (isinstance(node.value, ast.Name) and
                                                      node.value.id in self.scope.local_made):
                self.fail(node, "mutation", f".{attr}() only on containers this function built")
            if attr in A.VALUE_ATTRS or (base == VALUE and attr in A.TENSOR_VALUE_ATTRS):
                return FUNC if attr not in {"kwargs", "num_warps", "num_stages", "num_ctas", "maxnreg",
                                            "itemsize"} else VALUE
            self.fail(node, "host-method", f".{attr} is not allowed here" + self.hint(attr))
            return TENSOR
        if base == CONFIGS and attr in {"index", "count"}:
            return FUNC
        self.fail(node, "attribute", f".{attr} is not allowed on this value")
        return TENSOR

    @staticmethod
    def hint(name: str) -> str:
        last = name.rsplit(".", 1)[-1]
        if last in {"device", "is_cuda", "cuda", "runtime", "get_device_capability", "get_device_properties"}:
            return " (device introspection is not allowed: a kernel must behave the same on every device)"
        if last in {"item", "tolist", "cpu", "numpy", "data_ptr", "storage", "untyped_storage"}:
            return " (reading tensor values or storage on the host is not allowed)"
        return ""

    def x_Call(self, node: ast.Call) -> str:
        func = node.func
        for kw in node.keywords:
            if kw.arg is not None and kw.arg.startswith("__"):
                self.fail(kw, "dunder", f"keyword {kw.arg} is not allowed")
        # a launch: kernel[grid](...)
        if isinstance(func, ast.Subscript) and isinstance(func.value, ast.Name) and func.value.id in self.mod.jit:
            self.launch(node, func.value.id, func.slice)
            return VALUE
        if isinstance(func, ast.Name) and func.id in self.mod.jit:
            self.fail(node, "launch", f"launch a kernel as {func.id}[grid](...)")
            return VALUE
        if isinstance(func, ast.Name) and func.id in self.mod.host:
            return self.call_host(node, func.id)
        chain = self.mod.chain(func) if isinstance(func, ast.Attribute) else (
            self.mod.aliases.get(func.id) if isinstance(func, ast.Name) else None)
        arg_kinds = [self.expr(a.value if isinstance(a, ast.Starred) else a) for a in node.args]
        kw_kinds = {kw.arg: VALUE if self.device_of_tensor(kw, func) else self.expr(kw.value) for kw in node.keywords}
        if chain is not None:
            if not self.mod.chain_allowed(chain):
                self.fail(node, "call", f"{chain} is not on the allowlist")
                return TENSOR
            return self.call_library(node, chain, arg_kinds, kw_kinds)
        if isinstance(func, ast.Name):
            if func.id in self.scope.kinds:  # a local: only a grid lambda bound to a name
                self.fail(node, "call", f"{func.id} is a local value: call functions of this file directly")
                return TENSOR
            if func.id not in A.HOST_BUILTINS and func.id not in A.EXCEPTIONS:
                self.fail(node, "name", f"{func.id}() is not allowed (allowed builtins: "
                          f"{', '.join(sorted(A.HOST_BUILTINS - {'None', 'True', 'False'}))})")
                return TENSOR
            return self.call_builtin(node, func.id, arg_kinds)
        if isinstance(func, ast.Attribute):
            kind = self.expr(func)
            if kind != FUNC:
                if kind != TENSOR:  # (a refused attribute has been reported already)
                    self.fail(node, "call", "this is not callable here")
                return TENSOR
            base = self.expr(func.value)
            attr = func.attr
            if base == TENSOR:
                if any(k not in {VALUE} for k in arg_kinds + list(kw_kinds.values())) and attr not in {"view"}:
                    self.fail(node, "host-read", f".{attr}() with an argument that may be a tensor")
                if attr in A.TENSOR_VALUE_ATTRS:
                    return VALUE
                return TENSOR
            return VALUE if base != CONFIGS else CONFIGS
        self.fail(node, "call", "only calls of names and attribute chains are allowed")
        return TENSOR

    def device_of_tensor(self, kw: ast.keyword, func: ast.AST) -> bool:
        """`device=t.device` in an allocation (torch.empty(..., device=q.device)): the one place a
        tensor's device may be named; it is passed on, never compared or branched on."""
        value = kw.value
        if kw.arg != "device" or not (isinstance(value, ast.Attribute) and value.attr == "device"):
            return False
        alloc = self.mod.chain(func) in {"torch.empty", "torch.zeros", "torch.empty_strided", "torch.full",
                                         "torch.ones"} or (isinstance(func, ast.Attribute) and
                                                           func.attr in A.TENSOR_ALLOC_ATTRS)
        return alloc and self.expr(value.value) == TENSOR

    def launch(self, node: ast.Call, kernel: str, grid: ast.AST) -> None:
        if isinstance(grid, ast.Lambda):
            _Host(self.mod, grid, self.report, role="grid", outer=self.scope.kinds).run()
        elif isinstance(grid, ast.Name) and grid.id in self.mod.host:
            self.mod.roles[grid.id] = "grid"
        else:
            kind = self.expr(grid)
            if kind not in {VALUE, FUNC}:
                self.fail(grid, "host-read", "the grid may contain a tensor (Triton would read its value on the "
                          "host): compute it from shapes and scalar arguments")
        params = [a.arg for a in self.mod.jit[kernel].args.args]
        kinds = self.mod.kernel_params.setdefault(kernel, {})
        for i, arg in enumerate(node.args):
            kind = self.expr(arg.value if isinstance(arg, ast.Starred) else arg)
            if isinstance(arg, ast.Starred):
                continue
            if i < len(params):
                kinds[params[i]] = _join(kinds.get(params[i], "unset"), kind)
        for kw in node.keywords:
            kind = self.expr(kw.value)
            if kw.arg is None:
                continue
            if kw.arg in A.LAUNCH_KWARGS or kw.arg in self.mod.constexprs:
                if kind != VALUE:
                    self.fail(kw.value, "host-read", f"{kw.arg} may be a tensor: launch options and constexprs "
                              "must be computed from shapes and scalars")
            kinds[kw.arg] = _join(kinds.get(kw.arg, "unset"), kind)

    def call_host(self, node: ast.Call, name: str) -> str:
        fn = self.mod.host[name]
        kinds = self.mod.params.setdefault(name, ["unset"] * len(_all_args(fn)))
        positional = fn.args.posonlyargs + fn.args.args
        for i, arg in enumerate(node.args):
            kind = self.expr(arg.value if isinstance(arg, ast.Starred) else arg)
            slot = i if i < len(positional) and not isinstance(arg, ast.Starred) else None
            if slot is None:
                slot = len(positional) if fn.args.vararg else None
                kind = TENSOR
            if slot is not None and slot < len(kinds):
                kinds[slot] = _join(kinds[slot], kind)
        names = [a.arg for a in _all_args(fn)]
        for kw in node.keywords:
            kind = self.expr(kw.value)
            slot = names.index(kw.arg) if kw.arg in names else (names.index(fn.args.kwarg.arg) if fn.args.kwarg else None)
            if slot is not None:
                kinds[slot] = _join(kinds[slot], kind if kw.arg in names else TENSOR)
        return self.mod.returns.get(name, TENSOR)

    def call_library(self, node: ast.Call, chain: str, args: list[str], kws: dict) -> str:
        last = chain.rsplit(".", 1)[-1]
        if chain in {"triton.jit", "triton.autotune", "triton.heuristics"}:
            self.fail(node, "decorator", f"{chain} may only be used as a decorator")
            return TENSOR
        if chain == "triton.set_allocator":
            if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in self.mod.host:
                self.mod.roles[node.args[0].id] = "alloc"
            else:
                self.fail(node, "call", "triton.set_allocator takes a function of this file")
            return VALUE
        if chain == "triton.Config":
            return CONFIG
        if chain.startswith("torch.") and last in {"empty", "zeros", "empty_strided", "full", "ones"}:
            if any(k == TENSOR for k in args + [v for k, v in kws.items() if k != "device"]):
                self.fail(node, "host-read", f"{chain}: sizes and fill values must be shapes or scalars")
            return TENSOR
        if chain.startswith("torch.") and last.endswith("_like"):
            return TENSOR
        if "TensorDescriptor" in chain:
            return TENSOR
        if chain == "torch.Tensor" or chain == "torch.dtype":
            self.fail(node, "call", f"{chain} may only be used with isinstance")
            return TENSOR
        if any(k not in {VALUE, CONFIG} for k in args + list(kws.values())):
            self.fail(node, "host-read", f"{chain}() of a value that may be a tensor reads it on the host")
        return VALUE

    def call_builtin(self, node: ast.Call, name: str, args: list[str]) -> str:
        if name in A.EXCEPTIONS:
            return VALUE
        if name == "isinstance":
            return VALUE
        if name == "len":
            return VALUE
        if name in {"tuple", "list", "enumerate", "zip", "reversed", "sorted"} and args:
            if any(k == TENSOR for k in args) and not all(self.is_container(a) or isinstance(a, ast.Call) and
                                                         isinstance(a.func, ast.Attribute) and a.func.attr
                                                         in {"items", "values"} for a in node.args):
                self.fail(node, "host-read", f"{name}() of a value that may be a tensor iterates it on the host")
            if name == "sorted" and any(k == TENSOR for k in args):
                self.fail(node, "host-read", "sorting values that may be tensors compares them on the host")
            return TENSOR if any(k == TENSOR for k in args) else (CONFIGS if CONFIGS in args else VALUE)
        if any(k not in {VALUE, CONFIG} for k in args):
            self.fail(node, "host-read", f"{name}() of a value that may be a tensor reads its value on the host "
                      "(a synchronisation): use shapes and scalar arguments")
        return VALUE

    def x_Subscript(self, node: ast.Subscript) -> str:
        base = self.expr(node.value)
        if base == META:
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                if key.value in self.mod.constexprs:
                    return VALUE
                kinds = [k.get(key.value, "unset") for k in self.mod.kernel_params.values()]
                kind = _join(*kinds)
                return VALUE if kind == VALUE else TENSOR
            self.index(key)
            return TENSOR
        index = self.index(node.slice)
        if index != VALUE:
            self.fail(node, "host-read", "indexing with a value that may be a tensor reads it on the host")
        if base == CONFIGS:
            return CONFIG
        if base == CONFIG:
            return VALUE
        return base if base in {VALUE, TENSOR} else TENSOR

    def index(self, node: ast.AST) -> str:
        if isinstance(node, ast.Slice):
            parts = [p for p in (node.lower, node.upper, node.step) if p is not None]
            return _join(VALUE, *(self.expr(p) for p in parts))
        if isinstance(node, ast.Tuple):
            return _join(VALUE, *(self.index(e) for e in node.elts))
        return self.expr(node)

    def binop(self, node: ast.AST, left: str, right: str) -> str:
        if left != VALUE or right != VALUE:
            self.fail(node, "host-read", "arithmetic on a value that may be a tensor is torch compute on the host "
                      "(or a host read): do it in the Triton kernel")
            return TENSOR
        return VALUE

    def x_BinOp(self, node: ast.BinOp) -> str:
        if isinstance(node.op, ast.MatMult):
            self.fail(node, "matmul", "the @ operator is not allowed: use tl.dot inside a Triton kernel")
        return self.binop(node, self.expr(node.left), self.expr(node.right))

    def x_UnaryOp(self, node: ast.UnaryOp) -> str:
        kind = self.expr(node.operand)
        if kind != VALUE:
            self.fail(node, "host-read", "an operator on a value that may be a tensor (a host read or torch compute)")
            return TENSOR
        return VALUE

    def x_BoolOp(self, node: ast.BoolOp) -> str:
        for value in node.values:
            self.condition(value)
        return VALUE

    def x_Compare(self, node: ast.Compare) -> str:
        kinds = [self.expr(node.left)] + [self.expr(c) for c in node.comparators]
        if all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            return VALUE
        if any(k not in {VALUE, CONFIG} for k in kinds):
            self.fail(node, "host-read", "comparing a value that may be a tensor reads it on the host (allowed: "
                      "`is None`, comparisons of shapes, dtypes and scalars)")
            return TENSOR
        return VALUE

    def x_IfExp(self, node: ast.IfExp) -> str:
        self.condition(node.test)
        return _join(self.expr(node.body), self.expr(node.orelse))

    def seq(self, elts: list[ast.AST]) -> str:
        kinds = [self.expr(e.value if isinstance(e, ast.Starred) else e) for e in elts]
        if CONFIG in kinds and all(k == CONFIG for k in kinds):
            return CONFIGS
        return VALUE if all(k == VALUE for k in kinds) else TENSOR

    def x_Tuple(self, node: ast.Tuple) -> str:
        return self.seq(node.elts)

    def x_List(self, node: ast.List) -> str:
        return self.seq(node.elts)

    def x_Set(self, node: ast.Set) -> str:
        return self.seq(node.elts)

    def x_Dict(self, node: ast.Dict) -> str:
        keys = [self.expr(k) for k in node.keys if k is not None]
        if any(k != VALUE for k in keys):
            self.fail(node, "host-read", "dictionary keys must be plain values")
        return self.seq([v for v in node.values])

    def comprehension(self, node: ast.AST, elts: list[ast.AST]) -> str:
        for gen in node.generators:
            self.assign(gen.target, self.iterate(gen.iter), gen.iter)
            for cond in gen.ifs:
                self.condition(cond)
            if gen.is_async:
                self.fail(node, "syntax", "async comprehensions are not allowed")
        kinds = [self.expr(e) for e in elts]
        if all(k == CONFIG for k in kinds):
            return CONFIGS
        return VALUE if all(k == VALUE for k in kinds) else TENSOR

    def x_ListComp(self, node: ast.ListComp) -> str:
        return self.comprehension(node, [node.elt])

    x_SetComp = x_ListComp
    x_GeneratorExp = x_ListComp  # consumed at once by any()/all()/tuple(): no state survives

    def x_DictComp(self, node: ast.DictComp) -> str:
        return self.comprehension(node, [node.key, node.value])

    def x_JoinedStr(self, node: ast.JoinedStr) -> str:
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                kind = self.expr(value.value)
                if kind not in {VALUE, CONFIG}:
                    self.fail(value, "host-read", "formatting a value that may be a tensor reads it on the host: "
                              "format shapes and scalars only")
                if value.format_spec is not None:
                    self.expr(value.format_spec)
        return VALUE

    def x_Lambda(self, node: ast.Lambda) -> str:
        for default in node.args.defaults:
            if not self.mod.is_constant(default):
                self.fail(default, "mutable-default", "default argument values must be constants")
        _Host(self.mod, node, self.report, role="grid", outer=self.scope.kinds).run()
        return FUNC

    def x_Starred(self, node: ast.Starred) -> str:
        return self.expr(node.value)


class _Jit(_Checker):
    """Inside @triton.jit: tl.* and libdevice functions, jit functions of this file, local values."""

    def __init__(self, mod: _Module, fn: ast.FunctionDef):
        super().__init__(mod, fn, report=True)
        self.locals = {a.arg for a in _all_args(fn)}

    def run(self) -> None:
        for arg in _all_args(self.fn):
            if arg.arg.startswith("__"):
                self.fail(arg, "dunder", f"{arg.arg} is not allowed")
        for stmt in self.fn.body:
            self.stmt(stmt)

    def stmt(self, node: ast.stmt) -> None:
        allowed = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.If, ast.For, ast.While, ast.Return,
                   ast.Pass, ast.Break, ast.Continue, ast.Assert)
        if not isinstance(node, allowed):
            rule = "try" if isinstance(node, ast.Try) else "global" if isinstance(node, (ast.Global, ast.Nonlocal)) \
                else "statement"
            self.fail(node, rule, f"{type(node).__name__} statements are not allowed in a Triton kernel")
            return
        for target in _targets(node):
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    self.locals.add(sub.id)
                    self.name_rule(sub)
                elif isinstance(sub, (ast.Attribute, ast.Subscript)) and sub is target:
                    self.fail(target, "attribute-assignment", "assign to local names only inside a kernel")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.stmt(child)
            elif isinstance(child, ast.expr) and not (child in _targets(node)):
                self.expr(child)

    def expr(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            self.jit_name(node)
            return
        if isinstance(node, ast.Attribute):
            self.jit_attribute(node)
            return
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp, ast.Dict,
                             ast.Set, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom, ast.Starred)):
            self.fail(node, "syntax", f"{type(node).__name__} is not allowed in a Triton kernel")
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.mod.host:
            self.fail(node, "call", f"{node.func.id} is a host function: a kernel may call only @triton.jit "
                      "functions, tl.* and libdevice")
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            self.fail(node, "syntax", "bytes literals are not allowed")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.keyword):
                if child.arg is not None and child.arg.startswith("__"):
                    self.fail(child, "dunder", f"keyword {child.arg} is not allowed")
                self.expr(child.value)
            elif isinstance(child, (ast.expr, ast.comprehension)):
                self.expr(child)
            elif isinstance(child, ast.arguments):
                pass

    def jit_name(self, node: ast.Name) -> None:
        if not self.name_rule(node):
            return
        if node.id in self.locals or node.id in self.mod.constants or node.id in self.mod.jit:
            return
        target = self.mod.aliases.get(node.id)
        if target is not None and (target.startswith("triton") and (self.mod.module_prefix(target) or
                                                                    self.mod.chain_allowed(target, jit=True))):
            return
        if node.id in A.JIT_BUILTINS or node.id in {"None", "True", "False"}:
            return
        self.fail(node, "name", f"{node.id!r} is not allowed in a Triton kernel")

    def jit_attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("_"):
            self.fail(node, "private", f"private or dunder attribute .{node.attr} is not allowed")
            return
        chain = self.mod.chain(node)
        if chain is not None:
            if self.mod.chain_allowed(chain, jit=True) or (self.mod.module_prefix(chain) and chain.startswith("triton")):
                return
            self.fail(node, "triton-api", f"{chain} is not on the allowlist of kernel functions")
            return
        if node.attr not in A.JIT_ATTRS:
            self.fail(node, "attribute", f".{node.attr} is not allowed in a Triton kernel")
        self.expr(node.value)


def _targets(node: ast.stmt) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For)):
        return [node.target]
    return []
