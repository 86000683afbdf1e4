"""Export a :class:`~nflows_jax.sampling.run.ChainResult` to ArviZ (optional ``arviz`` extra).

::

    result = sample_chains(key, hmc(target.logdensity, 0.1, 10), positions, 1000)
    idata = to_arviz(result, var_names=target.names, step_size=0.1)
    arviz.summary(idata)

* **posterior**: the trace, chain-major (C, K, ...), as ``sample_chains`` stores it. An array
  trace (C, K, D) becomes one variable ``"x"`` with a dimension ``"x_dim_0"`` of size D, or, with
  ``var_names``, one variable per name (a sequence of D names: D scalar variables; a mapping
  name -> int index, slice or sequence of indices into the last axis: scalar or vector
  variables). A scalar trace (C, K) is one variable ``"x"``. A pytree trace (a dict from
  ``keep=("position", "logdensity")``, a NamedTuple, ...) gives one variable per leaf, named by
  its path (``"position"``, ``"a_b"`` for ``{"a": {"b": ...}}``).
* **sample_stats**: every field of ``info_trace`` whose leaves are (C, K, ...), under ArviZ's
  names where one exists (``acceptance_prob`` -> ``acceptance_rate``, ``is_divergent`` ->
  ``diverging``, ``num_leapfrog_steps`` -> ``n_steps``; ``energy_error``, ``step_size`` and
  ``accepted`` keep theirs), other fields under their own names. ``step_size`` (a number, or
  per chain (C,), or per draw (C, K)) adds a ``step_size`` statistic broadcast to (C, K) for
  kernels whose info does not carry it.

With arviz < 1 the result is an ``arviz.InferenceData``; with arviz >= 1 (arviz-base) the
``xarray.DataTree`` its ``from_dict`` builds. Only the first is exercised by the tests here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from nflows_jax.formatting import show

# ChainResult info field -> ArviZ sample_stats name (ArviZ's schema: "acceptance_rate",
# "diverging", "energy_error", "n_steps", "step_size", ...).
SAMPLE_STATS_NAMES = {
    "acceptance_prob": "acceptance_rate",
    "is_divergent": "diverging",
    "energy_error": "energy_error",
    "num_leapfrog_steps": "n_steps",
    "num_integration_steps": "n_steps",
    "step_size": "step_size",
    "accepted": "accepted",
}


def _import_arviz():
    try:
        return importlib.import_module("arviz")
    except ImportError as error:
        raise ImportError(
            "to_arviz needs ArviZ, an optional dependency: install the `arviz` extra "
            "(pip install 'nflows_jax[arviz]', or pip install 'arviz>=0.20')"
        ) from error


def _path_name(path: tuple[Any, ...]) -> str:
    parts = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    return "_".join(parts)


def _named_leaves(tree: Any) -> list[tuple[str, np.ndarray]]:
    """Leaves of a pytree as (path name, NumPy array); a bare array is one leaf named ''."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(_path_name(path), np.asarray(leaf)) for path, leaf in leaves]


def _check_leading(name: str, value: np.ndarray, shape: tuple[int, int], what: str) -> None:
    if value.shape[:2] != shape:
        raise ValueError(
            f"{what} {name!r} has shape {value.shape}; every leaf needs the leading chain and "
            f"draw axes (C, K) = {shape} of the trace"
        )


def _index_last_axis(trace: np.ndarray, name: str, index: Any) -> np.ndarray:
    size = trace.shape[-1]
    if isinstance(index, bool | np.bool_):
        raise ValueError(f"var_names[{name!r}] must be an int, a slice or indices; got a bool")
    if isinstance(index, int | np.integer):
        if not -size <= index < size:
            raise ValueError(f"var_names[{name!r}] = {index} is out of range for D = {size}")
        return trace[..., int(index)]
    if isinstance(index, slice):
        picked = trace[..., index]
    else:
        indices = np.asarray(index)
        if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                f"var_names[{name!r}] must be an int, a slice or a 1-D sequence of ints; got "
                f"{show(index)}"
            )
        if indices.min() < -size or indices.max() >= size:
            raise ValueError(f"var_names[{name!r}] = {show(index)} is out of range for D = {size}")
        picked = trace[..., indices]
    if picked.shape[-1] == 0:
        raise ValueError(f"var_names[{name!r}] = {index} selects no coordinate of D = {size}")
    return picked


def _posterior(trace: Any, var_names: Any) -> dict[str, np.ndarray]:
    leaves = _named_leaves(trace)
    if not leaves:
        raise ValueError("the result's trace is empty; run sample_chains with a keep that stores")
    if len(leaves) > 1 or leaves[0][0]:  # a pytree
        if var_names is not None:
            raise ValueError(
                "var_names applies to an array trace (C, K, D); this trace is a pytree with "
                f"leaves {[n for n, _ in leaves]}, which become one variable each"
            )
        shape = leaves[0][1].shape[:2]
        for name, value in leaves:
            if value.ndim < 2:
                raise ValueError(
                    f"trace leaf {name!r} has shape {value.shape}; expected (C, K, ...)"
                )
            _check_leading(name, value, shape, "trace leaf")
        return dict(leaves)
    trace = leaves[0][1]
    if trace.ndim < 2:
        raise ValueError(f"the trace has shape {trace.shape}; expected chain-major (C, K, ...)")
    if var_names is None:
        return {"x": trace}
    if trace.ndim != 3:
        raise ValueError(
            f"var_names needs a trace of shape (C, K, D); got {trace.shape}. Reshape the trace, "
            "or keep a dict of named arrays instead"
        )
    size = trace.shape[-1]
    if isinstance(var_names, Mapping):
        if not var_names:
            raise ValueError("var_names is an empty mapping")
        return {str(n): _index_last_axis(trace, str(n), i) for n, i in var_names.items()}
    if isinstance(var_names, str) or not isinstance(var_names, Sequence):
        raise ValueError(
            "var_names must be None, a sequence of D names or a mapping name -> index/slice; got "
            f"{var_names!r}"
        )
    names = [str(n) for n in var_names]
    if len(names) != size:
        raise ValueError(f"var_names has {len(names)} names for D = {size} coordinates")
    if len(set(names)) != len(names):
        raise ValueError(f"var_names has repeated names: {names}")
    return {name: trace[..., j] for j, name in enumerate(names)}


def _sample_stats(info_trace: Any, shape: tuple[int, int], step_size: Any) -> dict[str, Any]:
    stats: dict[str, np.ndarray] = {}
    if info_trace is not None:
        if hasattr(info_trace, "_asdict"):
            fields = info_trace._asdict().items()
        elif isinstance(info_trace, Mapping):
            fields = info_trace.items()
        else:
            fields = [("info", info_trace)]
        for field, value in fields:
            for sub, leaf in _named_leaves(value):
                name = SAMPLE_STATS_NAMES.get(field, field) if not sub else f"{field}_{sub}"
                if leaf.ndim < 2:
                    raise ValueError(
                        f"info field {name!r} has shape {leaf.shape}; expected (C, K, ...)"
                    )
                _check_leading(name, leaf, shape, "info field")
                if name in stats:
                    raise ValueError(f"two info fields map to the sample stat {name!r}")
                stats[name] = leaf
    if step_size is not None:
        if "step_size" in stats:
            raise ValueError("step_size was given but the kernel's info already records it")
        value = np.asarray(step_size)
        if value.ndim == 1:
            value = value[:, None]  # per chain
        try:
            stats["step_size"] = np.broadcast_to(value, shape).copy()
        except ValueError:
            raise ValueError(
                f"step_size must be a number, per chain (C,) or per draw (C, K) with (C, K) = "
                f"{shape}; got shape {np.shape(step_size)}"
            ) from None
    return stats


def to_arviz(
    result: Any,
    *,
    var_names: Sequence[str] | Mapping[str, Any] | None = None,
    step_size: Any = None,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
):
    """ArviZ data from a :class:`~nflows_jax.sampling.run.ChainResult`: posterior + sample stats.

    Args:
      result: what ``sample_chains`` returned (``trace`` leaves (C, K, ...), ``info_trace`` the
        kernel's info (C, K) per field, or None).
      var_names: for an array trace (C, K, D): None (one variable ``"x"`` (C, K, D)), D names
        (one scalar variable each, e.g. a target's ``names``) or a mapping name -> int / slice /
        indices into the last axis (e.g. ``EightSchools.blocks``). Not allowed for pytree traces,
        whose leaves are the variables.
      step_size: optional step size (a number, (C,) per chain or (C, K)) recorded as the
        ``step_size`` sample stat.
      coords, dims: passed to ArviZ's ``from_dict`` to label the non-(chain, draw) dimensions,
        e.g. ``coords={"school": names}, dims={"theta": ["school"]}``.

    Returns:
      ``arviz.InferenceData`` (arviz < 1) or ``xarray.DataTree`` (arviz >= 1) with groups
      ``posterior`` and, when there are any, ``sample_stats``. Draws are copied to NumPy with
      their dtype unchanged.

    Raises:
      ImportError: ArviZ is not installed (it is the ``arviz`` extra).
      ValueError: a malformed result or ``var_names``.
    """
    if not (hasattr(result, "trace") and hasattr(result, "info_trace")):
        raise ValueError(
            f"to_arviz takes the ChainResult of sample_chains; got {type(result).__name__}"
        )
    arviz = _import_arviz()
    posterior = _posterior(result.trace, var_names)
    shape = next(iter(posterior.values())).shape[:2]
    stats = _sample_stats(result.info_trace, shape, step_size)
    kwargs = {"coords": dict(coords) if coords else None, "dims": dict(dims) if dims else None}
    major = int(str(arviz.__version__).split(".")[0])
    if major >= 1:  # arviz-base: one mapping of groups
        groups = {"posterior": posterior}
        if stats:
            groups["sample_stats"] = stats
        return arviz.from_dict(groups, **kwargs)
    return arviz.from_dict(posterior=posterior, sample_stats=stats or None, **kwargs)


__all__ = ["SAMPLE_STATS_NAMES", "to_arviz"]
