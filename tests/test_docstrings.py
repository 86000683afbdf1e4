"""Every module, public function and public class of nflows_jax has a docstring, and every
bijector (or transformer) factory says which pass its formula is.

Modules are enumerated as ``docs/conf.py`` enumerates them for the API reference
(``pkgutil.walk_packages`` over the package), so every page of the reference is checked here.

Public, per module: the names in its ``__all__`` when it has one, else the functions and classes
defined in that module (``__module__`` is the module) whose names do not start with ``_``. Only
functions and classes count (a constant in ``__all__``, such as a tuple of mask names, carries
its type's docstring); jitted functions are unwrapped to the function they compile. Each object
is checked once, in the module that defines it, so a package's re-exports are not counted twice.
A public class's own public methods (defined in its body) are checked too: autodoc silently
leaves out a member without a docstring, so the reference would lose it without a warning.

Docstrings are read from the source (``ast.get_docstring``), not from ``__doc__``: dataclasses
(flax Modules) and NamedTuples give a class without a docstring a generated one, its signature,
which would pass a ``__doc__`` check while saying nothing.

Direction rule: a factory is a public function whose return annotation is ``Bijector`` or
``Transformer``. Its docstring must name the ``forward`` pass (the word "forward"). In this
library ``forward`` is base -> data and ``inverse`` data -> base (``nflows_jax.bijectors.base``),
and a layer's formula ``y = f(x)`` is only unambiguous once the docstring says which of the two
passes it is; a ``->`` alone does not count, since most docstrings use it for shapes
(``(B, D) -> (B,)``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
from functools import cache
from types import ModuleType

import pytest

import nflows_jax

FACTORY_RETURNS = ("Bijector", "Transformer")


def module_names() -> list[str]:
    """The package and all its submodules, as docs/conf.py lists them."""
    found = ["nflows_jax"]
    found += [info.name for info in pkgutil.walk_packages(nflows_jax.__path__, "nflows_jax.")]
    return sorted(found)


MODULES = module_names()


@cache
def definitions(module_name: str) -> dict[str, ast.AST]:
    """Qualified name -> def/class node for the top-level definitions and class members."""
    tree = ast.parse(inspect.getsource(sys.modules[module_name]))
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
            if isinstance(node, ast.ClassDef):
                for member in node.body:
                    if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                        found[f"{node.name}.{member.name}"] = member
    return found


def public_objects(module: ModuleType) -> list[tuple[str, object]]:
    """The module's public functions and classes that it defines, per the rule above."""
    if hasattr(module, "__all__"):
        candidates = [(name, getattr(module, name)) for name in module.__all__]
    else:
        candidates = [(name, obj) for name, obj in vars(module).items() if not name.startswith("_")]
    found = []
    for name, obj in candidates:
        obj = inspect.unwrap(obj) if callable(obj) else obj
        is_def = inspect.isfunction(obj) or inspect.isclass(obj)
        if is_def and getattr(obj, "__module__", None) == module.__name__:
            found.append((name, obj))
    return found


def source_docstring(obj: object) -> str | None:
    node = definitions(obj.__module__).get(obj.__qualname__)
    assert node is not None, f"{obj.__module__}.{obj.__qualname__}: definition not found in source"
    return ast.get_docstring(node)


def all_public() -> list[tuple[str, object]]:
    found = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        found += [(f"{module_name}.{name}", obj) for name, obj in public_objects(module)]
    return found


PUBLIC = all_public()


def factories() -> list[tuple[str, object]]:
    found = []
    for label, obj in PUBLIC:
        if inspect.isfunction(obj):
            returns = inspect.signature(obj).return_annotation
            returns = getattr(returns, "__name__", returns)  # a class, or a string under PEP 563
            if returns in FACTORY_RETURNS:
                found.append((label, obj))
    return found


FACTORIES = factories()


@pytest.mark.parametrize("module_name", MODULES)
def test_module_has_docstring(module_name):
    doc = importlib.import_module(module_name).__doc__
    assert doc and doc.strip(), f"module {module_name} has no docstring"


def test_public_functions_and_classes_have_docstrings():
    missing = [label for label, obj in PUBLIC if not (source_docstring(obj) or "").strip()]
    assert not missing, f"public objects without a docstring: {missing}"


def test_public_methods_have_docstrings():
    missing = []
    for label, cls in PUBLIC:
        if not inspect.isclass(cls):
            continue
        for qualname, node in definitions(cls.__module__).items():
            owner, _, method = qualname.partition(".")
            if owner == cls.__qualname__ and method and not method.startswith("_"):
                if not (ast.get_docstring(node) or "").strip():
                    missing.append(f"{label}.{method}")
    assert not missing, f"public methods without a docstring: {missing}"


def test_factories_are_found():
    # The direction test below must not pass vacuously: these factories span every kind (vector
    # and image layers, architectures, MAF, dequantization noise, transformers).
    names = {label.rsplit(".", 1)[1] for label, _ in FACTORIES}
    expected = {
        "affine_coupling",
        "image_spline_coupling",
        "actnorm",
        "glow",
        "masked_autoregressive",
        "planar",
        "chain",
        "dequantization_noise",
        "rational_quadratic_spline",
    }
    assert expected <= names, f"not found as factories: {sorted(expected - names)}"


@pytest.mark.parametrize("label, factory", FACTORIES, ids=[label for label, _ in FACTORIES])
def test_factory_names_its_forward_pass(label, factory):
    doc = source_docstring(factory) or ""
    assert re.search(r"\bforward\b", doc, re.IGNORECASE), (
        f"{label}: the docstring never says which pass is ``forward`` (base -> data)"
    )
