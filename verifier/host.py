"""The static gate's host code check (the wrapper, grid functions, heuristics, autotune hooks):
statements, assignments, calls and kernel launches, over the kinds of verifier/kinds.py.

The analysis runs to a fixpoint over call sites first (a helper's parameters get the kinds of
its arguments, a kernel's parameters those of its launches), then once more to report.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from kopt.verifier import allowlist as A
from kopt.verifier.kinds import CONFIG, CONFIGS, FUNC, META, TENSOR, VALUE, Expressions, all_args, join

KWARGS = "kwargs"  # a parameter given a caller's **kwargs dict at every call (names, values maybe tensors)

if TYPE_CHECKING:
    from kopt.verifier.toplevel import Module


def check(mod: Module) -> None:
    """Every host function and hook of the file: the kind analysis over call sites, then the report.

    Each pass reads the parameter kinds of the previous one and joins those of every call site
    afresh. The first pass reads "may be a tensor" for every helper parameter, and each pass can
    only narrow what the one before found (the kinds are monotone), so every pass's result covers
    every call made under it: sound even without a fixpoint. A call chain n deep settles in n passes.
    """
    base = {name: [mod.entry_kind(fn, i, a) if name == mod.opts.entry_point else mod.role_kind(name, i)
                   for i, a in enumerate(all_args(fn))] for name, fn in mod.host.items()}
    mod.params_seen = {name: list(kinds) for name, kinds in base.items()}
    for _ in range(8):
        mod.params = {name: list(kinds) for name, kinds in base.items()}
        mod.kernel_params = {}
        returns = dict(mod.returns)
        for fn in mod.host.values():
            Host(mod, fn, report=False).run()
        settled = (mod.params, mod.kernel_params, mod.returns) == (mod.params_seen, mod.kernel_params_seen, returns)
        mod.params_seen, mod.kernel_params_seen = mod.params, mod.kernel_params
        if settled:
            break
    mod.params, mod.kernel_params = {name: list(kinds) for name, kinds in base.items()}, {}
    for fn in mod.host.values():
        Host(mod, fn, report=True).run()
    for node, role in mod.deferred:
        Host(mod, node, report=True, role=role).run()


class Host(Expressions):
    """Host code: every expression gets a kind (value, tensor, meta dict, config, ...)."""

    def __init__(self, mod: Module, fn: ast.FunctionDef | ast.Lambda, report: bool, role: str | None = None,
                 outer: dict[str, str] | None = None):
        super().__init__(mod, fn, report)
        self.role = role
        self.scope.kinds.update(outer or {})  # a lambda reads its enclosing function's locals
        name = getattr(fn, "name", None)
        kinds = mod.params_seen.get(name) if name else None
        for i, arg in enumerate(all_args(fn)):
            if kinds is not None and i < len(kinds) and kinds[i] != "unset":
                kind = kinds[i]
            elif name in mod.roles:
                kind = mod.role_kind(name, i)
            elif role is not None:
                kind = CONFIGS if role == "prune" and i == 0 else META
            else:
                kind = TENSOR
            if kind == KWARGS:
                self.scope.kwargs.add(arg.arg)
            self.scope.kinds[arg.arg] = TENSOR if kind in {"unset", KWARGS} else kind
            if arg is fn.args.vararg:
                self.scope.local_made.add(arg.arg)  # a tuple the call built: unpacking it reads nothing
            if arg is fn.args.kwarg:
                self.scope.kwargs.add(arg.arg)
            if arg.arg.startswith("__"):
                self.fail(arg, "dunder", f"{arg.arg} is not allowed")

    def run(self) -> None:
        if isinstance(self.fn, ast.Lambda):
            if self.expr(self.fn.body) == TENSOR:
                self.fail(self.fn, "host-read", "a lambda here may return a tensor: Triton reads what a grid, "
                          "heuristic or key function returns on the host; return shapes, scalars or configs")
            return
        kind = "unset"
        for stmt in self.fn.body:
            kind = join(kind, self.stmt(stmt) or "unset")
        self.mod.returns[self.fn.name] = kind if kind != "unset" else VALUE
        if kind == TENSOR and self.mod.roles.get(self.fn.name) in {"grid", "heuristic"}:
            self.returns_tensor(self.fn)

    def returns_tensor(self, fn: ast.FunctionDef) -> None:
        self.fail(fn, "host-read", f"{fn.name} may return a tensor: Triton reads what a grid or heuristic "
                  "function returns on the host; return shapes and scalars")

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
            return join(*(self.stmt(s) or "unset" for s in node.body + node.orelse))
        elif isinstance(node, ast.While):
            self.condition(node.test)
            return join(*(self.stmt(s) or "unset" for s in node.body + node.orelse))
        elif isinstance(node, ast.For):
            self.assign(node.target, self.iterate(node.iter), None)
            return join(*(self.stmt(s) or "unset" for s in node.body + node.orelse))
        elif isinstance(node, ast.Return):
            return self.expr(node.value) if node.value is not None else VALUE
        elif isinstance(node, ast.Raise):
            self.raise_(node)
        elif isinstance(node, ast.Assert):
            self.condition(node.test)
            # its message is formatted on the host when the assertion fails, as an exception's arguments are (an
            # independent panel's kernel asserted on the batch size with the index tensors as the message)
            if node.msg is not None and self.expr(node.msg) not in {VALUE, CONFIG}:
                self.fail(node.msg, "host-read", "an assertion's message may not hold a value that may be a tensor "
                          "(formatting it reads the tensor on the host): name shapes, dtypes and scalars")
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
        inner = Host(self.mod, node, self.report, role="grid", outer=self.scope.kinds)
        if join(*(inner.stmt(stmt) or "unset" for stmt in node.body)) == TENSOR:
            inner.returns_tensor(node)
        self.scope.kinds[node.name] = FUNC
        self.scope.local_made.discard(node.name)

    def raise_(self, node: ast.Raise) -> None:
        exc = node.exc
        call = exc if isinstance(exc, ast.Call) else None
        name = (call.func if call else exc)
        if not (isinstance(name, ast.Name) and name.id in A.EXCEPTIONS) or node.cause is not None:
            self.fail(node, "raise", f"only raise {', '.join(sorted(A.EXCEPTIONS))}(message) is allowed")
            return
        if call is not None:
            self.exception_args(call)

    def exception_args(self, call: ast.Call, kinds: list[str] | None = None) -> None:
        """An exception's arguments are formatted on the host (str(ValueError(t)) prints a tensor's values
        and its device: an independent panel branched on that in a grid lambda): shapes and scalars only."""
        args = call.args + [kw.value for kw in call.keywords]
        for arg, kind in zip(args, kinds or [self.expr(a) for a in args]):
            if kind not in {VALUE, CONFIG}:
                self.fail(arg, "host-read", "an exception's message may not hold a value that may be a tensor "
                          "(formatting it reads the tensor on the host): name shapes, dtypes and scalars")

    def assign(self, target: ast.AST, kind: str, value: ast.AST | None) -> None:
        """`value`: what a plain name is bound to, None for loop targets and unpacked elements: only a name
        bound to a container or tensor made right there is the function's own (mutable, `local_made`); a
        loop over `[CONFIGS]` or `a, b = [CONFIGS, x]` binds what already existed (an independent panel
        appended to a module-level config list through such a loop, keeping tensors between calls)."""
        if kind.startswith("items:") and not isinstance(target, (ast.Tuple, ast.List)):
            kind = TENSOR
        if isinstance(target, ast.Name):
            if not self.name_rule(target):
                return
            if target.id in self.mod.constants or target.id in self.mod.host or target.id in self.mod.jit:
                self.fail(target, "assignment", f"{target.id} is a module-level name: assign to a local instead")
            self.scope.kinds[target.id] = kind
            self.scope.kwargs.discard(target.id)
            made = value is not None and isinstance(value, (ast.List, ast.Dict, ast.ListComp, ast.DictComp, ast.Set)) or self.allocates(value)
            (self.scope.local_made.add if made else self.scope.local_made.discard)(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            if kind.startswith("items:") and len(target.elts) == 2:
                self.assign(target.elts[0], VALUE, None)
                self.assign(target.elts[1], kind[6:], None)
                return
            element = VALUE if kind == VALUE else TENSOR
            for elt in target.elts:
                self.assign(elt.value if isinstance(elt, ast.Starred) else elt, element, None)
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

    def comprehension(self, node: ast.AST, elts: list[ast.AST]) -> str:
        for gen in node.generators:
            self.assign(gen.target, self.iterate(gen.iter), None)
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

    def x_Lambda(self, node: ast.Lambda) -> str:
        for default in node.args.defaults:
            if not self.mod.is_constant(default):
                self.fail(default, "mutable-default", "default argument values must be constants")
        Host(self.mod, node, self.report, role="grid", outer=self.scope.kinds).run()
        return FUNC

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
        arg_kinds = [self.expr(a) for a in node.args]
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
        if isinstance(func, ast.Attribute) and self.is_kwargs(func.value) and func.attr in {"keys", "get", "values",
                                                                                             "items"}:
            if func.attr == "get" and (not arg_kinds or arg_kinds[0] != VALUE):
                self.fail(node, "host-read", "kwargs.get() takes an option name")
            return VALUE if func.attr == "keys" else TENSOR  # the names; the values may be tensors
        if isinstance(func, ast.Attribute):
            kind = self.expr(func)
            if kind != FUNC:
                if kind != TENSOR:  # (a refused attribute has been reported already)
                    self.fail(node, "call", "this is not callable here")
                return TENSOR
            base = self.expr(func.value)
            attr = func.attr
            if base == TENSOR:
                if any(k not in {VALUE} for k in arg_kinds + list(kw_kinds.values())):
                    self.fail(node, "host-read", f".{attr}() with an argument that may be a tensor")
                if attr in A.TENSOR_VALUE_ATTRS:
                    return VALUE
                return TENSOR
            mutating = attr in A.MUTATING_VALUE_ATTRS and isinstance(func.value, ast.Name) \
                and func.value.id in self.scope.local_made  # a list the function built may hold tensors
            if not mutating and any(k not in {VALUE, CONFIG} for k in arg_kinds + list(kw_kinds.values())):
                self.fail(node, "host-read", f".{attr}() with an argument that may be a tensor compares or hashes it "
                          "on the host; pass shapes and scalars")
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
            Host(self.mod, grid, self.report, role="grid", outer=self.scope.kinds).run()
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
            kind = self.expr(arg)
            if isinstance(arg, ast.Starred):
                continue
            if i < len(params):
                kinds[params[i]] = join(kinds.get(params[i], "unset"), kind)
        for kw in node.keywords:
            kind = self.expr(kw.value)
            if kw.arg is None:
                continue
            if kw.arg in A.LAUNCH_KWARGS or kw.arg in self.mod.constexprs:
                if kind != VALUE:
                    self.fail(kw.value, "host-read", f"{kw.arg} may be a tensor: launch options and constexprs "
                              "must be computed from shapes and scalars")
            kinds[kw.arg] = join(kinds.get(kw.arg, "unset"), kind)

    def call_host(self, node: ast.Call, name: str) -> str:
        """The kinds this call gives the helper's parameters: joined into mod.params."""
        fn = self.mod.host[name]
        params = all_args(fn)
        kinds = self.mod.params.setdefault(name, ["unset"] * len(params))
        positional = fn.args.posonlyargs + fn.args.args
        vararg = len(positional) if fn.args.vararg else None
        names = [a.arg for a in params]
        passed: set[int] = set()

        def give(slot: int | None, kind: str) -> None:
            if slot is not None and slot < len(kinds):
                kinds[slot] = join(kinds[slot], kind)
                passed.add(slot)

        unpacked = None  # the first *iterable: from there on, which parameter gets what is unknown
        for i, arg in enumerate(node.args):
            kind = KWARGS if self.is_kwargs(arg) else self.expr(arg)
            if isinstance(arg, ast.Starred) and unpacked is None:
                unpacked = i
            if unpacked is not None:
                for slot in range(unpacked, len(positional)):
                    give(slot, TENSOR)
                give(vararg, TENSOR)
            elif i < len(positional):
                give(i, kind)
            else:
                give(vararg, TENSOR)
        for kw in node.keywords:
            kind = self.expr(kw.value)
            if kw.arg is None:  # **mapping: it may fill any parameter this call does not name
                for slot in range(len(params)):
                    if slot not in passed:
                        give(slot, TENSOR)
            elif kw.arg in names and params[names.index(kw.arg)] not in (fn.args.vararg, fn.args.kwarg):
                give(names.index(kw.arg), KWARGS if self.is_kwargs(kw.value) else kind)
            elif fn.args.kwarg:
                give(len(params) - 1, TENSOR)
        # a parameter this call leaves out takes its default (a constant, by the top-level rules)
        defaults = dict(zip(positional[len(positional) - len(fn.args.defaults):], fn.args.defaults))
        defaults.update((a, d) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None)
        for slot, arg in enumerate(params):
            if slot not in passed and arg in defaults and slot < len(kinds):
                kinds[slot] = join(kinds[slot], VALUE if self.mod.is_constant(defaults[arg]) else TENSOR)
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
        if chain.startswith("torch.") and last.endswith("_like"):  # the fill value is read on the host too
            if any(k == TENSOR for k in args[1:] + [v for k, v in kws.items() if k != "device"]):
                self.fail(node, "host-read", f"{chain}: the fill value must be a scalar, not a value that may be "
                          "a tensor (Triton or torch would read it on the host)")
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
            self.exception_args(node, args + [self.expr(kw.value) for kw in node.keywords])
            return VALUE
        if name == "isinstance":
            return VALUE
        if name == "len":
            return VALUE
        if name in {"tuple", "list", "sorted", "set", "frozenset"} and len(node.args) == 1 and not node.keywords \
                and self.is_kwargs(node.args[0]):
            return VALUE  # the option names
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
