"""Multi-scale Glow and RealNVP: one bijector from data to a latent of the data's shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax import flows
from nflows_jax.bijectors.architectures import glow, realnvp_multiscale
from nflows_jax.testing import check_bijector

IMAGE = (4, 4, 1)
# Noise on the initialised params small enough that ten stacked couplings stay well conditioned
# (with 0.3 the bounded log-scales saturate and the Jacobian is singular in float64).
PERTURBATION = 0.05


def _images(seed: int = 0, batch: int = 3) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((batch, *IMAGE)), jnp.float32)


MODELS = {
    "glow": lambda: glow(IMAGE, levels=2, steps_per_level=1, hidden=4, num_blocks=1),
    "realnvp": lambda: realnvp_multiscale(IMAGE, levels=2, steps_per_level=1, hidden=4,
                                          num_blocks=1),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODELS))
def test_multiscale_model_round_trips_and_its_log_det_matches_jacfwd(name):
    """On a 4×4×1 image: check_bijector's round trips, log-dets against slogdet(jacfwd) of the
    whole 16-pixel map, batch independence, jit and vmap, all in float64."""
    check_bijector(MODELS[name](), _images(), key=jax.random.PRNGKey(0), perturbation=PERTURBATION)


def test_glow_is_a_flow_with_a_standard_normal_latent_of_the_image_shape():
    flow = flows.Flow(flows.standard_normal(IMAGE), MODELS["glow"]())
    x = _images(1, batch=16)
    params = jax.jit(lambda x: flows.init(flow, jax.random.PRNGKey(1), x))(x)
    log_p = jax.jit(lambda p, x: flows.log_prob(flow, p, x))(params, x)
    samples = jax.jit(lambda p: flows.sample(flow, p, jax.random.PRNGKey(2), (2, 5)))(params)
    assert log_p.shape == (16,) and bool(jnp.all(jnp.isfinite(log_p)))
    assert samples.shape == (2, 5, *IMAGE)
    # Actnorm's data-dependent init standardises what reaches it, so the latent of the init
    # batch is not the raw data: its log-density differs from the base's at the data.
    base = jax.jit(lambda x: flow.base.log_prob(x))(x)
    assert float(jnp.max(jnp.abs(log_p - base))) > 0.1


@pytest.mark.parametrize("make", [glow, realnvp_multiscale])
def test_image_sizes_the_squeezes_cannot_halve_are_refused(make):
    with pytest.raises(ValueError, match="divisible by 4"):
        make((6, 4, 1), levels=2)
    with pytest.raises(ValueError, match="levels >= 1"):
        make(IMAGE, levels=0)
