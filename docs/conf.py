"""Sphinx configuration: the API reference (one page per module, from the docstrings) and the
tutorial notebooks with their saved outputs, built offline by ``make docs`` with warnings as errors.

The per-module pages are written here at every build from the package itself, and the notebooks
copied in from ``notebooks/`` (``docs/api/`` and ``docs/notebooks/`` are generated and ignored by
git), so a new module or tutorial gets a page without anyone remembering to add one.
``nitpicky`` makes every cross-reference in a docstring resolve or fail the build; references into
jax, numpy, distrax, flax, optax and the standard library cannot resolve offline (no intersphinx
inventories are downloaded) and are the only ones let through.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import shutil
from pathlib import Path

import nflows_jax

DOCS = Path(__file__).parent
ROOT = DOCS.parent

project = "nflows_jax"
author = "the nflows_jax developers"
release = nflows_jax.__version__
copyright = "2026, the nflows_jax developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# docs/ also holds the experiments' figures and tables; only these are pages.
include_patterns = ["index.md", "api/*.rst", "notebooks/*.ipynb"]
exclude_patterns = ["_build"]

html_theme = "furo"
html_title = f"nflows_jax {release}"
html_static_path: list[str] = []

# Notebooks are shown with the outputs `make notebooks` saved into them: the docs build never
# trains anything, and `make test` is what executes them.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections become field lists of their class, not separate objects (which would
# describe a NamedTuple field or a flax Module attribute twice).
napoleon_use_ivar = True
# A flax Module's inherited setup/__call__ docstrings describe flax, not this module.
autodoc_inherit_docstrings = False

nitpicky = True
_EXTERNAL_PACKAGES = (
    "jax jaxlib jnp np numpy distrax flax nn optax chex orbax arviz tfds tensorflow_datasets"
    " typing collections abc builtins pathlib os enum functools"
).split()
# Type aliases of the library (Array, PRNGKey, Params, ...) appear in signatures by name.
_ALIASES = (
    "Array ArrayLike PRNGKey Params PyTree Shape DTypeLike Position LogDensity TransformFn InitFn"
    " Callable Any Sequence Mapping Iterable Iterator NamedTuple Path"
    " int float str bool tuple list dict None object type callable optional"
).split()
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(_EXTERNAL_PACKAGES)})(\..*)?"),
    (r"py:class", rf"({'|'.join(_ALIASES)})"),
]


def _modules() -> list[tuple[str, bool]]:
    """Every module of the package, with whether it is a package (its page lists submodules)."""
    found = [("nflows_jax", True)]
    for info in pkgutil.walk_packages(nflows_jax.__path__, "nflows_jax."):
        found.append((info.name, info.ispkg))
    return sorted(found)


def _page(name: str, is_package: bool, children: list[str]) -> str:
    title = f"``{name}``"
    lines = [title, "=" * len(title), ""]
    if is_package:
        # A package re-exports its submodules' functions; they are documented once, where they
        # are defined, so a package page is its docstring and the list of its submodules.
        lines += [f".. automodule:: {name}", "   :no-members:", ""]
        if children:
            lines += [".. toctree::", "   :maxdepth: 1", ""]
            lines += [f"   {child}" for child in children]
            lines.append("")
    else:
        lines += [f".. automodule:: {name}", ""]
    return "\n".join(lines)


def write_api_pages() -> None:
    modules = _modules()
    names = [name for name, _ in modules]
    api = DOCS / "api"
    api.mkdir(exist_ok=True)
    for stale in api.glob("*.rst"):
        stale.unlink()
    for name, is_package in modules:
        importlib.import_module(name)  # an import error fails the build here, with its traceback
        depth = name.count(".") + 1
        children = [n for n in names if n.startswith(name + ".") and n.count(".") + 1 == depth + 1]
        (api / f"{name}.rst").write_text(_page(name, is_package, children))


def copy_notebooks() -> None:
    # Copies, not a symlink: links between notebooks resolve against the page's own folder.
    pages = DOCS / "notebooks"
    pages.mkdir(exist_ok=True)
    for stale in pages.glob("*.ipynb"):
        stale.unlink()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copyfile(notebook, pages / notebook.name)


def _drop_namedtuple_field_aliases(app, what, name, obj, options, lines):
    # NamedTuple fields carry the generated docstring "Alias for field number N", which says
    # nothing; the class docstring documents its fields.
    if lines and re.fullmatch(r"Alias for field number \d+", lines[0].strip()):
        lines.clear()


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    # A NamedTuple's fields are documented by its docstring's Attributes section (napoleon);
    # documenting the generated field accessors as well would describe each field twice.
    if what == "class" and type(obj).__name__ == "_tuplegetter":
        return True
    return None


def setup(app):
    write_api_pages()
    copy_notebooks()
    app.connect("autodoc-process-docstring", _drop_namedtuple_field_aliases)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
