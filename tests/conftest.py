"""Shared test set-up: JAX runs in its default float32 so tolerances mean what they say."""

import jax
import pytest

jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="module")
def fast_compiles():
    """Ask XLA for little optimisation while a test module runs, restoring the setting after.

    Small test programs spend most of their time compiling, not running; on a 2-core CPU this
    roughly halves the bijector and flow tests' time. Numerics stay float32 IEEE arithmetic (only
    fusion and op order change), and every tolerance in those tests is derived to allow for it.
    Opt in with ``pytestmark = pytest.mark.usefixtures("fast_compiles")``.
    """
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
