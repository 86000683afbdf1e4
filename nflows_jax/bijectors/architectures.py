"""Multi-scale image flows: Glow and RealNVP, each one bijector from data to a latent of its shape.

Both are written in the density direction (data -> latent) and returned inverted, so that their
``forward`` generates (latent -> data) as every bijector here does, while ``init`` still sees the
data batch pass through the layers in the direction actnorm's data-dependent initialisation needs
(``invert`` keeps ``init``; ``repeat.init`` carries the batch through the layers).

One level, on (B, H, W, C) with H and W even (density direction)::

    squeeze                          (H, W, C) -> (H/2, W/2, 4C)
    steps                            K flow steps on 4C channels: one ``repeat``, one lax.scan
    split prior   (not the last)     z2 | z1: a channel-mask affine coupling, Glow's learned prior
    on_channels(next level, 2C)      the coarser levels act on z1 only; z2 goes to the latent
    unsqueeze                        back to (H, W, C)

so the latent has the data's shape and a standard-normal base gives ``log_prob`` with no special
case. A Glow step is actnorm, an LU-decomposed invertible 1×1 convolution and an affine coupling
with a convolutional ResNet conditioner (channel mask); a RealNVP level alternates checkerboard
couplings before the squeeze and channel couplings after it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from nflows_jax.bijectors.base import Bijector, chain, invert, repeat
from nflows_jax.bijectors.glow import actnorm, invertible_conv1x1_lu, squeeze
from nflows_jax.bijectors.image_coupling import image_affine_coupling
from nflows_jax.bijectors.multiscale import on_channels
from nflows_jax.formatting import show


def _check_architecture(name: str, levels: int, steps: int, height: int, width: int) -> None:
    if not isinstance(levels, int) or levels < 1 or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"{name} needs integer levels >= 1 and steps_per_level >= 1; got {show(levels)} and "
            f"{show(steps)}"
        )
    factor = 2**levels
    if height % factor or width % factor:
        raise ValueError(
            f"{name} with {levels} level(s) squeezes by 2 per level, so the image size must be "
            f"divisible by {factor}; got {height}×{width}"
        )


LayerFor = Callable[[int], Bijector]  # number of channels -> a bijector on them


def _multiscale(
    levels: int,
    channels: int,
    after_squeeze: LayerFor,
    split_prior: LayerFor,
    before_squeeze: LayerFor | None = None,
) -> Bijector:
    """The density-direction chain of ``levels`` levels on ``channels`` input channels."""
    squeezed = 4 * channels
    parts = [] if before_squeeze is None else [before_squeeze(channels)]
    parts += [squeeze(), after_squeeze(squeezed)]
    if levels > 1:
        inner = _multiscale(levels - 1, squeezed // 2, after_squeeze, split_prior, before_squeeze)
        parts += [split_prior(squeezed), on_channels(inner, squeezed // 2)]
    parts.append(invert(squeeze()))
    return chain(*parts)


def _resolve_unroll(unroll: bool | None) -> bool:
    """``None``: unroll on CPU, where XLA runs convolution gradients inside a loop about 30×
    slower than outside one (measured in ``benchmarks/glow.py``); scan on other backends, where
    compile time stays flat in depth."""
    return jax.default_backend() == "cpu" if unroll is None else bool(unroll)


def _split_prior(hidden: int, num_blocks: int) -> LayerFor:
    """Glow's learned prior on the factored half: an affine coupling conditioned on the rest."""
    return lambda channels: image_affine_coupling(channels, hidden=hidden, num_blocks=num_blocks)


def glow(
    image_shape: tuple[int, int, int],
    levels: int = 2,
    steps_per_level: int = 4,
    hidden: int = 64,
    num_blocks: int = 1,
    seed: int = 0,
    unroll: bool | None = None,
) -> Bijector:
    """Glow (Kingma & Dhariwal, 2018) on NHWC images of ``image_shape = (H, W, C)``.

    Each level squeezes, runs ``steps_per_level`` steps of (actnorm, LU 1×1 conv, affine coupling
    with a ``num_blocks``-block ConvResNet of ``hidden`` channels) as one ``repeat``, and factors
    out half of its channels under a learned conditional prior. ``seed`` fixes the 1×1 convs'
    permutations. Params: a tuple per ``chain``, stacked over the steps of a level. ``unroll``:
    see ``repeat``; ``None`` unrolls on CPU only (params and results are the same either way).

    ``forward`` maps a latent (B, H, W, C) to images of the same shape (sampling), ``inverse``
    images to the latent (density); log-dets (B,). ``init`` takes an example batch of images
    (data side: the layers are built in the density direction and inverted).
    """
    height, width, channels = image_shape
    _check_architecture("glow", levels, steps_per_level, height, width)

    def steps(num_channels: int) -> Bijector:
        step = chain(
            actnorm(),
            invertible_conv1x1_lu(num_channels, seed=seed),
            image_affine_coupling(num_channels, hidden=hidden, num_blocks=num_blocks),
        )
        return repeat(step, steps_per_level, unroll=_resolve_unroll(unroll))

    return invert(_multiscale(levels, channels, steps, _split_prior(hidden, num_blocks)))


def realnvp_multiscale(
    image_shape: tuple[int, int, int],
    levels: int = 2,
    steps_per_level: int = 2,
    hidden: int = 64,
    num_blocks: int = 2,
    unroll: bool | None = None,
) -> Bijector:
    """Multi-scale RealNVP (Dinh et al., 2017) on NHWC images of ``image_shape = (H, W, C)``.

    Each level runs ``steps_per_level`` pairs of checkerboard couplings (parity 0 then 1),
    squeezes, runs ``steps_per_level`` pairs of channel couplings and factors out half of the
    channels through a learned prior coupling, as Glow does. Each set of pairs is one ``repeat``
    (``unroll`` as in :func:`glow`). Directions and ``init`` as in :func:`glow`: ``forward`` is
    latent -> images, ``inverse`` images -> latent, both (B, H, W, C), log-dets (B,).
    """
    height, width, channels = image_shape
    _check_architecture("realnvp_multiscale", levels, steps_per_level, height, width)

    def alternating(mask: str) -> LayerFor:
        def pairs(num_channels: int) -> Bijector:
            pair = chain(
                *(
                    image_affine_coupling(
                        num_channels, hidden=hidden, num_blocks=num_blocks, mask=mask, parity=p
                    )
                    for p in (0, 1)
                )
            )
            return repeat(pair, steps_per_level, unroll=_resolve_unroll(unroll))

        return pairs

    density = _multiscale(
        levels,
        channels,
        alternating("channel"),
        _split_prior(hidden, num_blocks),
        before_squeeze=alternating("checkerboard"),
    )
    return invert(density)


__all__ = ["glow", "realnvp_multiscale"]
