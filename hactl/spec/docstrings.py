"""Attribute docstrings (the string right under a field), read the way pydantic's
``use_attribute_docstrings`` reads them, but with one parse of the module's source.

pydantic re-reads and re-tokenizes the source for every model class (~17 ms for the spec
models, paid by every command that loads a spec); :class:`hactl.spec.models.Model` uses this
instead, for module-level classes.
"""

from __future__ import annotations

import ast
import inspect
import sys
from functools import cache
from typing import Any


class _Visitor(ast.NodeVisitor):
    """pydantic's ``DocstringVisitor`` (``pydantic._internal._docs_extraction``), same rules."""

    def __init__(self) -> None:
        super().__init__()
        self.target: str | None = None
        self.attrs: dict[str, str] = {}
        self.previous_node_type: type[ast.AST] | None = None

    def visit(self, node: ast.AST) -> Any:
        result = super().visit(node)
        self.previous_node_type = type(node)
        return result

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.target = node.target.id

    def visit_Expr(self, node: ast.Expr) -> None:
        if (
            isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and self.previous_node_type is ast.AnnAssign
        ):
            if self.target:
                self.attrs[self.target] = inspect.cleandoc(node.value.value)
            self.target = None

    def visit_ClassDef(self, node: ast.ClassDef) -> None:  # nested classes are not ours
        pass

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        pass

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        pass


@cache
def _module_classes(filename: str) -> dict[str, ast.ClassDef]:
    try:
        with open(filename, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return {}
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def attribute_docstrings(cls: type[Any]) -> dict[str, str]:
    """``{attribute: docstring}`` of a module-level class; ``{}`` without its source."""
    filename = getattr(sys.modules.get(cls.__module__), "__file__", None)
    node = _module_classes(filename).get(cls.__name__) if filename else None
    if node is None or cls.__qualname__ != cls.__name__:
        return {}
    visitor = _Visitor()
    visitor.generic_visit(node)
    return visitor.attrs
