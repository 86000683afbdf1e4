"""Run many MCMC chains at once: ``vmap`` over chains inside a ``lax.scan`` over steps.

::

    result = sample_chains(key, kernel, positions, num_steps=1000, burn_in=500, thin=2)
    result.trace          # (C, 500, D): kept positions, chain-major as ArviZ/diagnostics expect
    result.info_trace     # the kernel's info at the kept steps, leaves (C, 500, ...)
    result.final_state    # the state after the last step, leaves (C, ...): resume from here

Design:

* **Memory** grows with the number of kept draws, not with ``num_steps``: an outer ``lax.scan``
  over kept draws stores one state (and info) per iteration; its body advances all chains
  ``thin`` steps with an inner ``fori_loop`` that stores nothing, and burn-in is folded into the
  first iteration's loop (``burn_in + thin`` steps). So the kernel's ``step`` (and the target
  inside it) is traced and compiled once, not once per loop. The inner loop has a dynamic trip
  count (a ``while_loop``): forward-mode autodiff through a run works, reverse-mode does not.
* **Random numbers**: chain ``i`` at global step ``t`` uses the key ``chain_keys(key, t, C)[i]``,
  built without hashing per chain (see :func:`chain_keys`). Its randomness depends on
  ``(key, t, i)`` only, so adding chains, thinning or splitting burn-in differently never changes
  what an existing chain does at a given step.
* **Devices**: with several devices the chain axis is sharded over all of them (1-D mesh, axis
  name ``"chains"``); chains are independent so the sharded run computes the same numbers.
* **Progress**: an optional tqdm bar driven by ``jax.debug.callback`` from inside the scan.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nflows_jax.formatting import show
from nflows_jax.sampling.base import Array, Kernel, PRNGKey

CHAIN_AXIS = "chains"

KeepSpec = str | Sequence[str] | Callable[[Any, Any], Any]


class ChainResult(NamedTuple):
    """What :func:`sample_chains` returns. ``C`` chains, ``K = num_steps // thin`` kept draws.

    Attributes:
      final_state: the kernel state after the last step, every leaf with leading axis (C, ...).
        Pass ``final_state.position`` back in (or keep stepping from it) to continue a run.
      trace: what ``keep`` selected at each kept step, chain-major: leaves (C, K, ...). With the
        default ``keep="position"`` and positions (C, D) this is an array (C, K, D).
      info_trace: the kernel's info at each kept step, leaves (C, K, ...); ``None`` when
        ``keep_info=False``. With thinning these are the infos of the kept steps only (an unbiased
        subsample for averages such as the acceptance rate).
    """

    final_state: Any
    trace: Any
    info_trace: Any


# ------------------------------------------------------------------------------------------------
# Per-chain keys
# ------------------------------------------------------------------------------------------------


def _is_typed_key(key: Array) -> bool:
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _validate_key(key: Array) -> None:
    if _is_typed_key(key):
        if key.shape != ():
            raise ValueError(
                f"sample_chains takes ONE key, got a typed key array of shape {key.shape}; "
                "the per-chain keys are derived from it"
            )
        return
    key = jnp.asarray(key)
    if key.dtype != jnp.uint32 or key.ndim != 1:
        raise ValueError(
            "key must be a typed key (jax.random.key(seed)) or a legacy uint32 key "
            f"(jax.random.PRNGKey(seed)); got dtype {key.dtype}, shape {key.shape}"
        )
    expected = jax.random.key_data(jax.random.key(0)).shape
    if key.shape != expected:
        raise ValueError(
            f"a legacy uint32 key must have shape {expected} (one key; batches of keys are not "
            f"accepted), got {key.shape}"
        )


def chain_keys(key: PRNGKey, step: Array | int, num_chains: int) -> PRNGKey:
    """The ``num_chains`` keys used at global step ``step``: same key kind as ``key``.

    One hash per step, none per chain: ``k_t = fold_in(key, t)``, then chain ``i`` gets the key
    whose data is ``k_t`` with the chain index XOR-ed into its last 32-bit word. Splitting
    ``k_t`` into C keys instead runs threefry over 2C words every step, which on cheap targets
    costs more than the target itself.

    Why this is sound: threefry-2x32 (JAX's default PRNG) is a keyed block cipher, and JAX draws
    ``random_bits(key, n)`` as ``threefry(key, counter)`` for counters 0..n-1. In the Random123
    design (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3") the key is the
    *stream identifier*: every distinct key selects an independent stream (2^64 of them for
    2x32), and applications are meant to use plain structured ids (thread, particle, step) as
    keys, because the cipher's rounds, not the key's entropy, provide the mixing. So
    (k_t[0], k_t[1] XOR i) is as good a key as a hashed one; the tests check that draws of chains
    whose keys differ in one bit are uncorrelated. Distinct (t, i) give distinct keys unless
    fold_in collides on the first word (probability about 2^-32 per pair of steps) *and* the
    second words line up within the chain range. Chain i at step t depends on (key, t, i) only,
    never on ``num_chains``.

    Args:
      key: a typed key (shape ()) or a legacy uint32 key (shape (2,)).
      step: the global step index (int or scalar int array, may be traced).
      num_chains: C, static.

    Returns:
      Typed keys of shape (C,) or uint32 key data of shape (C, 2), matching ``key``.
    """
    step_key = jax.random.fold_in(key, step)
    typed = _is_typed_key(key)
    words = jax.random.key_data(step_key) if typed else step_key
    chain_ids = jnp.arange(num_chains, dtype=words.dtype)
    head = jnp.broadcast_to(words[:-1], (num_chains, words.shape[0] - 1))
    tail = (words[-1] ^ chain_ids)[:, None]
    data = jnp.concatenate([head, tail], axis=1)
    if typed:
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))
    return data


# ------------------------------------------------------------------------------------------------
# Progress bar
# ------------------------------------------------------------------------------------------------


class _ProgressBar:
    """Host-side tqdm bar updated from ``jax.debug.callback``.

    The compiled scan is cached across calls, so the callback cannot capture a bar created for one
    call; it opens a bar at the first report of a run and closes it at the last. Reports carry the
    number of steps done; a report that arrives batched (the user vmapped ``sample_chains``) or
    repeated (one call per vmapped element) is reduced to its maximum, and a stray report after a
    bar closed is ignored unless it is the first report of a new run.
    """

    def __init__(self) -> None:
        self._bar = None
        self._lock = threading.Lock()

    def report(self, done: Any, *, total: int, every: int) -> None:
        done = int(np.max(np.asarray(done)))
        with self._lock:
            if self._bar is None:
                if done > every:  # a late report from a run whose bar is already closed
                    return
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc="sampling", unit="step")
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
            if done >= total:
                self._bar.close()
                self._bar = None


_PROGRESS = _ProgressBar()


def _maybe_report(step: Array, total: int) -> None:
    """Report progress every ``max(1, total // 100)`` steps and at the last step.

    The modulo test runs on device inside ``lax.cond`` so the host is called about 100 times per
    run, not once per step. ``step`` is the scan's own counter, which is unbatched because the
    vmap over chains lives inside the scan body.
    """
    every = max(1, total // 100)
    done = step + 1
    should_report = (done % every == 0) | (done == total)
    callback = functools.partial(_PROGRESS.report, total=total, every=every)
    jax.lax.cond(
        should_report,
        lambda d: jax.debug.callback(callback, d),
        lambda d: None,
        done,
    )


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def _num_chains(positions: Any, num_chains: int | None = None) -> int:
    """The number of chains C: the leading axis shared by every leaf of ``positions``.

    Without ``num_chains`` a position whose leaves are all 1-D is ambiguous (one chain of a (D,)
    position, or D chains of scalars) and raises; ``num_chains`` makes the chain axis explicit.
    """
    leaves = jax.tree_util.tree_leaves(positions)
    if not leaves:
        raise ValueError("positions is an empty pytree; expected arrays with a leading chain axis")
    shapes = [tuple(jnp.shape(leaf)) for leaf in leaves]
    if any(len(s) == 0 for s in shapes):
        raise ValueError(
            f"every leaf of positions needs a leading chain axis (C, ...); got shapes {shapes}"
        )
    counts = {s[0] for s in shapes}
    if len(counts) != 1:
        raise ValueError(f"all leaves of positions must share the chain axis size; got {shapes}")
    size = counts.pop()
    if num_chains is not None:
        if size != num_chains:
            raise ValueError(
                f"num_chains={num_chains} but the leading (chain) axis of positions has size "
                f"{size}; got shapes {shapes}"
            )
    elif all(len(s) == 1 for s in shapes):
        shape = shapes[0] if len(shapes) == 1 else shapes
        raise ValueError(
            f"positions of shape {shape} are ambiguous: the chain axis comes first, so this would "
            f"run {size} chains of scalar positions. For ONE chain of this position pass "
            f"positions[None] (shape (1, {size})); for {size} chains of scalars pass "
            f"num_chains={size} (or positions[:, None] for chains of shape-(1,) positions)"
        )
    if size < 1:
        raise ValueError("positions has zero chains")
    return size


def _as_key(key: Any) -> PRNGKey:
    """An int seed becomes ``jax.random.PRNGKey(seed)``; keys pass through; other types raise."""
    if isinstance(key, bool | np.bool_):
        raise TypeError("key must be a PRNG key or an int seed, got a bool")
    if isinstance(key, int | np.integer):
        return jax.random.PRNGKey(int(key))
    if isinstance(key, jax.Array | np.ndarray):
        if not _is_typed_key(key) and key.ndim == 0 and jnp.issubdtype(key.dtype, jnp.integer):
            return jax.random.PRNGKey(key)  # a scalar integer array, possibly traced
        return key
    raise TypeError(
        "key must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)) or an int "
        f"seed, got {type(key).__name__}"
    )


def _keep_function(keep: Any) -> Callable[[Any, Any], Any]:
    """Turn ``keep`` into a per-chain ``fn(state, info) -> pytree``."""
    if callable(keep):
        return keep
    names = (keep,) if isinstance(keep, str) else tuple(keep)

    def select(state, info):
        missing = [n for n in names if not hasattr(state, n)]
        if missing:
            fields = getattr(state, "_fields", None)
            raise ValueError(f"keep names {missing} are not fields of the state (fields: {fields})")
        if isinstance(keep, str):
            return getattr(state, keep)
        return {n: getattr(state, n) for n in names}

    return select


def _chain_sharding(mesh: Mesh | None, tree: Any) -> Any:
    """Constrain every leaf's leading axis to be split over the mesh (no-op without a mesh)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, P(CHAIN_AXIS))
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


@functools.partial(
    jax.jit,
    static_argnames=(
        "kernel",
        "num_steps",
        "thin",
        "burn_in",
        "keep",
        "keep_info",
        "progress",
        "mesh",
    ),
)
def _run(
    key: PRNGKey,
    positions: Any,
    *,
    kernel: Kernel,
    num_steps: int,
    thin: int,
    burn_in: int,
    keep: Any,
    keep_info: bool,
    progress: bool,
    mesh: Mesh | None,
) -> ChainResult:
    num_chains = jax.tree_util.tree_leaves(positions)[0].shape[0]
    num_padded = num_chains
    if mesh is not None and num_chains % mesh.size:
        # Pad with copies of the last chain. Padding chains get their own stream keys
        # (indices >= C), so the real chains compute exactly what they would unsharded.
        num_padded = -(-num_chains // mesh.size) * mesh.size
        pad = num_padded - num_chains
        positions = jax.tree_util.tree_map(
            lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0), positions
        )
    positions = _chain_sharding(mesh, positions)
    keep_fn = _keep_function(keep)
    total_steps = burn_in + num_steps
    # Wrapped in jit so that its trace is cached: the eval_shape below and the loop body then
    # share ONE trace of the kernel's step (a nested jit is inlined by XLA: no run-time cost).
    batched_step = jax.jit(jax.vmap(kernel.step))

    def one_step(states, step):
        keys = chain_keys(key, step, num_padded)
        states, infos = batched_step(keys, states)
        states = _chain_sharding(mesh, states)
        if progress:
            _maybe_report(step, total_steps)
        return states, infos

    # The kernel's step appears ONCE in the compiled program: every kept draw is the end of a
    # block of steps run by one fori_loop, and burn-in is folded into the first block (a dynamic
    # trip count). Separate burn-in/thinning loops would each inline (and compile) the target.
    init_states = _chain_sharding(mesh, jax.vmap(kernel.init)(positions))
    info_shapes = jax.eval_shape(batched_step, chain_keys(key, 0, num_padded), init_states)[1]
    init_infos = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), info_shapes)

    def kept_block(states, block):
        first = jnp.where(block == 0, 0, burn_in + block * thin)
        count = jnp.where(block == 0, burn_in + thin, thin)

        def body(i, carry):
            states, infos = one_step(carry[0], first + i)
            # A kernel may return weakly typed infos; the loop carry needs exact types.
            return states, jax.tree_util.tree_map(lambda x: jnp.asarray(x, x.dtype), infos)

        states, infos = jax.lax.fori_loop(0, count, body, (states, init_infos))
        kept = jax.vmap(keep_fn)(states, infos)
        return states, (kept, infos if keep_info else None)

    num_kept = num_steps // thin
    states, (trace, info_trace) = jax.lax.scan(kept_block, init_states, jnp.arange(num_kept))

    # scan stacks step-major (K, C, ...); diagnostics and ArviZ want chain-major (C, K, ...).
    def chain_major(x):
        return jnp.swapaxes(x, 0, 1)

    trace = jax.tree_util.tree_map(chain_major, trace)
    info_trace = jax.tree_util.tree_map(chain_major, info_trace)
    result = ChainResult(states, trace, info_trace)
    result = _chain_sharding(mesh, result)
    if num_padded != num_chains:
        result = jax.tree_util.tree_map(lambda x: x[:num_chains], result)
    return result


def _resolve_mesh(shard: bool | None) -> Mesh | None:
    if shard is False:
        return None
    devices = jax.devices()
    if shard is None and (len(devices) == 1 or jax.process_count() > 1):
        # Auto mode shards only single-process runs; multi-host users place arrays themselves.
        return None
    return Mesh(np.array(devices), (CHAIN_AXIS,))


def sample_chains(
    key: PRNGKey,
    kernel: Kernel,
    positions: Any,
    num_steps: int,
    *,
    thin: int = 1,
    burn_in: int = 0,
    keep: KeepSpec = "position",
    keep_info: bool = True,
    progress: bool = False,
    shard: bool | None = None,
    num_chains: int | None = None,
) -> ChainResult:
    """Run C chains of ``kernel`` for ``burn_in + num_steps`` steps, keeping every ``thin``-th.

    Args:
      key: one PRNG key, typed (``jax.random.key``) or legacy uint32 (``jax.random.PRNGKey``),
        or an int seed, read as ``jax.random.PRNGKey(seed)`` (same draws as passing that key).
        Chain i at global step t uses ``chain_keys(key, t, C)[i]``: its draws depend on
        (key, t, i) only, so a run with more chains reproduces the existing chains exactly.
      kernel: any :class:`~nflows_jax.sampling.base.Kernel` (init/step for ONE chain).
      positions: initial positions with a leading chain axis: an array (C, D) or a pytree whose
        leaves all have leading size C. The chain axis is always the first; since a 1-D array
        (C,) would equally be one (D,) position, positions whose leaves are all 1-D raise a
        ValueError unless ``num_chains`` is given: pass ``positions[None]`` for one chain, or
        ``num_chains=C`` for C chains of scalar positions.
      num_steps: post-burn-in steps; must be a positive multiple of ``thin``.
      thin: store one state every ``thin`` steps (the last of each block of ``thin``).
      burn_in: steps run first and never stored.
      keep: which part of each kept state to store: a state field name (the trace is then that
        field, e.g. positions (C, K, D)), a sequence of names (a dict name -> (C, K, ...)), or a
        per-chain function ``keep(state, info) -> pytree`` (vmapped over chains for you).
      keep_info: also store the kernel's info at the kept steps.
      progress: show a tqdm bar (about 100 host callbacks per run; off by default).
      shard: ``None`` (default) shards the chain axis over all devices when a single process sees
        several; ``True`` always builds the mesh; ``False`` never. If C is not a multiple of the
        device count, the chains are padded with copies of the last one inside the compiled run
        and the padding is dropped from the result (at most ``devices - 1`` extra chains of work;
        the real chains' numbers are unchanged thanks to the per-chain stream keys).
      num_chains: optional C; when given, every leaf of ``positions`` must have leading size C
        (and 1-D leaves are read as C scalar positions).

    Returns:
      :class:`ChainResult` with ``final_state`` leaves (C, ...), ``trace`` and ``info_trace``
      leaves (C, K, ...) where K = num_steps // thin. ``trace[:, k]`` is the state after global
      step ``burn_in + (k + 1) * thin - 1`` (0-based), i.e. after ``burn_in + (k + 1) * thin``
      transitions.

    Compilation is cached on ``kernel``, ``keep`` and the other static arguments: reuse the same
    kernel object (and a named ``keep`` function, not a fresh lambda) across calls to avoid
    recompiling. Works under an outer ``jax.jit`` or ``jax.vmap`` (e.g. over keys).
    """
    for name, value, low in (
        ("num_steps", num_steps, 1),
        ("thin", thin, 1),
        ("burn_in", burn_in, 0),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {show(value)}")
    if num_steps % thin:
        raise ValueError(
            f"num_steps ({num_steps}) must be a multiple of thin ({thin}) so that every kept draw "
            "is separated by exactly thin steps"
        )
    if not isinstance(kernel, Kernel):
        raise ValueError(f"kernel must be a nflows_jax.sampling.base.Kernel, got {type(kernel)}")
    key = _as_key(key)
    _validate_key(key)
    if num_chains is not None and (
        not isinstance(num_chains, int | np.integer) or isinstance(num_chains, bool)
    ):
        raise ValueError(f"num_chains must be an int or None, got {show(num_chains)}")
    _num_chains(positions, None if num_chains is None else int(num_chains))
    if not callable(keep):
        keep = keep if isinstance(keep, str) else tuple(keep)
        if not all(isinstance(n, str) for n in ((keep,) if isinstance(keep, str) else keep)):
            raise ValueError(f"keep must be a field name, names, or a function; got {keep!r}")
    return _run(
        key,
        positions,
        kernel=kernel,
        num_steps=int(num_steps),
        thin=int(thin),
        burn_in=int(burn_in),
        keep=keep,
        keep_info=bool(keep_info),
        progress=bool(progress),
        mesh=_resolve_mesh(shard),
    )
