"""The Adam train step every benchmark shares: (params, opt_state), batch -> new state, loss."""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax


def adam_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """``step((params, opt_state), x) -> ((params, opt_state), loss)``, loss_fn(params, x)."""

    def step(state, x):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step
