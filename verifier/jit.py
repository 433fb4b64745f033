"""The static gate's check of Triton kernels (@triton.jit functions): only tl.* and libdevice
functions of the allowlist, jit functions of the same file and local values; no host functions,
no attribute or subscript assignment, no closures or comprehensions."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from kopt.verifier import allowlist as A
from kopt.verifier.kinds import Checker, all_args

if TYPE_CHECKING:
    from kopt.verifier.toplevel import Module


def check(mod: Module) -> None:
    for fn in mod.jit.values():
        Jit(mod, fn).run()


class Jit(Checker):
    """Inside @triton.jit: tl.* and libdevice functions, jit functions of this file, local values."""

    def __init__(self, mod: Module, fn: ast.FunctionDef):
        super().__init__(mod, fn, report=True)
        self.locals = {a.arg for a in all_args(fn)}

    def run(self) -> None:
        for arg in all_args(self.fn):
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
