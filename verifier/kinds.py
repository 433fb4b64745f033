"""The kind analysis of host code: what a value may be, and the rules for expressions.

Every value in host code has a kind: VALUE (known not to be a tensor: ints, shapes, dtypes,
strings), TENSOR (may be a tensor), META (Triton's meta dict), CONFIG/CONFIGS (autotune
configs), FUNC, MODULE. A value that may be a tensor can only have its metadata read, be viewed,
allocated from or passed on; converting, comparing, branching on, iterating, formatting or
indexing with it is refused (a host read of tensor contents). Statements, calls and launches are
in verifier/host.py.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kopt.verifier import allowlist as A

if TYPE_CHECKING:
    from kopt.verifier.toplevel import Module

VALUE, TENSOR, META, CONFIG, CONFIGS, FUNC, MODULE = "value", "tensor", "meta", "config", "configs", "func", "module"


def all_args(fn: ast.FunctionDef | ast.Lambda) -> list[ast.arg]:
    a = fn.args
    return a.posonlyargs + a.args + ([a.vararg] if a.vararg else []) + a.kwonlyargs + ([a.kwarg] if a.kwarg else [])


def join(*kinds: str) -> str:
    kinds = tuple(k for k in kinds if k != "unset")
    if not kinds:
        return "unset"
    if all(k == kinds[0] for k in kinds):
        return kinds[0]
    return TENSOR  # mixed: the unsafe one


@dataclass
class Scope:
    kinds: dict[str, str] = field(default_factory=dict)
    local_made: set[str] = field(default_factory=set)  # containers and tensors this function allocated
    kwargs: set[str] = field(default_factory=set)  # the **kwargs parameter: string keys, values may be tensors


class Checker:
    """Shared by host and jit checks: statements and the forms they may take."""

    def __init__(self, mod: Module, fn: ast.FunctionDef | ast.Lambda, report: bool):
        self.mod, self.fn, self.report = mod, fn, report
        self.scope = Scope()

    def fail(self, node: ast.AST, rule: str, message: str) -> None:
        if self.report:
            self.mod.fail(node, rule, message)

    def name_rule(self, node: ast.Name) -> bool:
        if node.id.startswith("__"):
            self.fail(node, "dunder", f"{node.id} is not allowed")
            return False
        return True


class Expressions(Checker):
    """The kind of each host expression, refusing the forms that read a tensor on the host (calls,
    comprehensions and lambdas are in host.Host, which also supplies `assign`)."""

    def is_kwargs(self, node: ast.AST) -> bool:
        """The function's own **kwargs dict (its keys are option names: iterating, counting or testing them
        reads no tensor; its values may be tensors)."""
        return isinstance(node, ast.Name) and node.id in self.scope.kwargs

    def condition(self, node: ast.AST) -> None:
        if self.is_kwargs(node):
            return  # `if kwargs:` asks whether any option was passed
        kind = self.expr(node)
        if kind not in {VALUE, CONFIG, CONFIGS}:  # (a list of configs is true when not empty: no element is read)
            self.fail(node, "host-read", "this condition may be a tensor: branching on it reads tensor values "
                      "on the host (a synchronisation, and a way to see the verifier's inputs); branch on shapes, "
                      "dtypes and scalar arguments only")

    def iterate(self, node: ast.AST) -> str:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "items" \
                and not node.args:
            inner = self.expr(node.func.value)
            return "items:" + (VALUE if inner == VALUE else TENSOR)  # (key, value) pairs: keys are strings
        if self.is_kwargs(node):
            return VALUE
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

    def x_Subscript(self, node: ast.Subscript) -> str:
        base = self.expr(node.value)
        if base == META:
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                if key.value in self.mod.constexprs:
                    return VALUE
                kinds = [k.get(key.value, "unset") for k in self.mod.kernel_params_seen.values()]
                kind = join(*kinds)
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
            return join(VALUE, *(self.expr(p) for p in parts))
        if isinstance(node, ast.Tuple):
            return join(VALUE, *(self.index(e) for e in node.elts))
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
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)) and self.is_kwargs(node.comparators[0]) \
                and kinds[0] == VALUE:
            return VALUE  # an option name looked up among the keys
        if any(k not in {VALUE, CONFIG} for k in kinds):
            self.fail(node, "host-read", "comparing a value that may be a tensor reads it on the host (allowed: "
                      "`is None`, comparisons of shapes, dtypes and scalars)")
            return TENSOR
        return VALUE

    def x_IfExp(self, node: ast.IfExp) -> str:
        self.condition(node.test)
        return join(self.expr(node.body), self.expr(node.orelse))

    def seq(self, elts: list[ast.AST]) -> str:
        kinds = [self.expr(e) for e in elts]
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

    def x_Starred(self, node: ast.Starred) -> str:
        kind = self.expr(node.value)
        if kind == TENSOR and not self.is_container(node.value):
            self.fail(node, "host-read", "unpacking (*) a value that may be a tensor iterates it on the host; "
                      "unpack tuples or lists of tensors, or shapes")
        return kind
