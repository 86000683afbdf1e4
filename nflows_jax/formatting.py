"""How error messages show values (NumPy and JAX numbers as plain Python ones), and the
context-shape check every conditional model shares.

NumPy 2 writes ``repr(np.float32(0.5))`` as ``np.float32(0.5)``; a message should say ``0.5``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

_MAX_LISTED = 8  # longer arrays are summarised by NumPy's printer


def show(value: Any) -> str:
    """``repr(value)``, with NumPy/JAX scalars and small arrays as plain numbers and lists."""
    if isinstance(value, jax.core.Tracer) or not isinstance(
        value, np.generic | np.ndarray | jax.Array
    ):
        return repr(value)
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        return repr(value)
    if array.ndim == 0:
        return repr(array.item())
    if array.size <= _MAX_LISTED:
        return repr(array.tolist())
    return np.array2string(array, threshold=_MAX_LISTED, edgeitems=3)


def check_context(
    layer: str, setting: str, width: int, batch: int, context: Any, kind: str = ""
) -> None:
    """Raise a clear ValueError unless ``context`` is None (``width == 0``) or (batch, width).

    ``layer`` and ``setting`` name the model and its option in the message, e.g.
    ``check_context("MADE", "context_size", 3, 8, c)``; ``kind`` qualifies the expected array
    (``"one-hot "``).
    """
    expected = None if width == 0 else (batch, width)
    got = None if context is None else tuple(np.shape(context))
    if got != expected:
        raise ValueError(
            f"{layer} was built with {setting}={width}: context must be "
            f"{'None' if expected is None else f'{kind}of shape {expected}'}; got "
            f"{'None' if got is None else f'shape {got}'}"
        )


__all__ = ["check_context", "show"]
