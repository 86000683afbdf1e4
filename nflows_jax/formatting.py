"""How error messages show values: NumPy and JAX numbers as plain Python ones.

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


__all__ = ["show"]
