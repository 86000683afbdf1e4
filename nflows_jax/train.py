"""The Optax training loop: a jit-compiled step, progress bar, NaN guard, checkpoints, metrics.

::

    def loss_fn(params, batch, key):             # -> scalar
        return -jnp.mean(log_prob(flow, params, batch))

    result = fit(loss_fn, params, optax.adam(1e-3), batches(data, 256, seed=0), num_steps=5000,
                 key=jax.random.PRNGKey(1), checkpoint_dir="runs/moons/ckpt",
                 metrics_path="runs/moons/metrics.json")
    result.params, result.opt_state, result.history["loss"]

Determinism and resuming. ``batch_fn(step)`` must be a pure function of the step index and the
key used at step ``s`` is ``jax.random.fold_in(key, s)``, so a run's trajectory is a function of
(params, optimizer, batch_fn, key) alone. A checkpoint holds params, optimizer state, the number of
steps done and the history so far; ``fit`` with the same arguments and the same
``checkpoint_dir`` picks up at the latest checkpoint and, on CPU, ends with bitwise the same params
as a run that was never interrupted. Each checkpoint also stores the tree signature (paths, shapes,
dtypes, structure) of its state, so a directory holding another model's or optimizer's checkpoint,
or one from beyond ``num_steps``, is refused with a ``CheckpointMismatchError`` before training.
A resumed run's carry is placed exactly like a fresh run's, so it reuses the compiled step.

The NaN guard costs no host sync per step. The compiled step itself refuses a non-finite update:
when the loss or the global gradient norm is not finite it keeps the old params and optimizer
state and records the step in a flag carried on device; once set, the flag freezes every later
step too. The host reads the flag where it already syncs (every ``log_every`` steps, before an
evaluation or a checkpoint, and at the end) and raises ``NonFiniteLossError`` carrying the last
finite params, i.e. those from before the bad step. At most ``log_every - 1`` frozen steps are
wasted before the error is raised.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nflows_jax.formatting import show

Array = jax.Array
PRNGKey = jax.Array
Params = Any
Batch = Any

LossFn = Callable[[Params, Batch, PRNGKey], Array]
BatchFn = Callable[[int], Batch]
EvalFn = Callable[[Params], Mapping[str, float]]


class NonFiniteLossError(FloatingPointError):
    """Training hit a non-finite loss or gradient norm.

    Attributes:
      step: the 0-based index of the step whose loss or gradient was not finite.
      params: the last finite params, i.e. those after step ``step - 1`` (the initial params when
        ``step`` is the first step of the run).
      opt_state: the optimizer state that goes with ``params``.
      loss: the offending loss (a float; NaN, ±inf, or finite when only the gradient was not).
      grad_norm: the gradient's global norm at that step (a float; may be NaN or ±inf).
    """

    def __init__(
        self, step: int, params: Params, opt_state: Any, loss: float, grad_norm: float
    ) -> None:
        super().__init__(
            f"non-finite value at step {step}: loss={loss}, gradient norm={grad_norm}. Training "
            f"stopped; the error's .params are the last finite params (from before step {step})."
        )
        self.step = step
        self.params = params
        self.opt_state = opt_state
        self.loss = loss
        self.grad_norm = grad_norm


class TrainResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      params: the trained params.
      opt_state: the optimizer state after the last step (to continue training).
      history: a JSON-serialisable dict, also written to ``metrics_path``:
        ``log_steps`` / ``loss`` (mean training loss over the steps since the previous log point,
        one entry per log point), ``eval`` (a list of ``{"step": s, **eval_fn(params)}``),
        ``num_steps``, ``start_step`` (> 0 when resumed), ``steps_run`` (in this call),
        ``wall_time_s``, ``steps_per_second`` (this call, compilation included) and
        ``steps_per_second_after_compile`` (steps after the first, which also compiles).
        Step numbers count completed steps: log point ``s`` is after ``s`` steps.
    """

    params: Params
    opt_state: Any
    history: dict[str, Any]


class _TrainState(NamedTuple):
    """Everything the compiled step carries; donated to the step and returned fresh."""

    params: Params
    opt_state: Any
    step: Array  # int32 (), the index of the next step to run
    bad_step: Array  # int32 (), the first non-finite step, or -1
    bad_loss: Array  # float32 (), the loss at bad_step
    bad_grad_norm: Array  # float32 (), the gradient norm at bad_step
    loss_sum: Array  # float32 (), sum of accepted losses since the last log point


def _make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    carry_sharding: jax.sharding.Sharding | None = None,
) -> Callable:
    """The jitted step. With ``carry_sharding`` (data-parallel runs: the params' replicated
    sharding) the whole returned carry is pinned to it, so every step sees its inputs placed
    exactly as the first did (one compilation) and the host reads replicated scalars."""

    def checked_loss_fn(params: Params, batch: Batch, key: PRNGKey) -> Array:
        loss = loss_fn(params, batch, key)
        if jnp.ndim(loss) != 0:  # checked while tracing, before value_and_grad's terser error
            raise ValueError(f"loss_fn must return a scalar; got shape {jnp.shape(loss)}")
        return loss

    def train_step(state: _TrainState, batch: Batch, key: PRNGKey) -> _TrainState:
        step_key = jax.random.fold_in(key, state.step)
        loss, grads = jax.value_and_grad(checked_loss_fn)(state.params, batch, step_key)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)

        # Once a step has gone bad every later one is refused too, so the params left behind are
        # exactly those from before the first bad step, however late the host notices.
        no_failure_yet = state.bad_step < 0
        accept = finite & no_failure_yet
        newly_bad = ~finite & no_failure_yet

        def keep_if_accepted(new, old):
            return jax.tree.map(lambda n, o: jnp.where(accept, n, o), new, old)

        loss32 = loss.astype(jnp.float32)
        return _TrainState(
            params=keep_if_accepted(new_params, state.params),
            opt_state=keep_if_accepted(new_opt_state, state.opt_state),
            step=state.step + 1,
            bad_step=jnp.where(newly_bad, state.step, state.bad_step),
            bad_loss=jnp.where(newly_bad, loss32, state.bad_loss),
            bad_grad_norm=jnp.where(newly_bad, grad_norm.astype(jnp.float32), state.bad_grad_norm),
            loss_sum=state.loss_sum + jnp.where(accept, loss32, 0.0),
        )

    # The state is donated: params and optimizer state are updated in place where the backend can.
    if carry_sharding is None:
        return jax.jit(train_step, donate_argnums=0)
    return jax.jit(train_step, donate_argnums=0, out_shardings=carry_sharding)


@functools.lru_cache(maxsize=4)  # small: a loss_fn may close over a whole dataset
def _cached_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    carry_sharding: jax.sharding.Sharding | None,
) -> Callable:
    return _make_train_step(loss_fn, optimizer, carry_sharding)


def _train_step_for(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    carry_sharding: jax.sharding.Sharding | None = None,
) -> Callable:
    """The jitted step, shared by ``fit`` calls with the same loss and optimizer objects (and
    mesh), so resuming or re-running in one process does not compile again."""
    try:
        hash((loss_fn, optimizer, carry_sharding))
    except TypeError:  # an unhashable optimizer (e.g. holding a list): compile a private step
        return _make_train_step(loss_fn, optimizer, carry_sharding)
    return _cached_train_step(loss_fn, optimizer, carry_sharding)


def _home_sharding(params: Params) -> jax.sharding.Sharding:
    """The one device a run lives on: that of the first params leaf, else JAX's default device."""
    leaves = jax.tree.leaves(params)
    if leaves and isinstance(leaves[0], jax.Array) and len(leaves[0].devices()) == 1:
        (device,) = leaves[0].devices()
    else:
        (device,) = jnp.zeros(()).devices()
    return jax.sharding.SingleDeviceSharding(device)


def _mesh_shardings(
    mesh: jax.sharding.Mesh, batch_axis: str
) -> tuple[jax.sharding.NamedSharding, jax.sharding.NamedSharding]:
    """(replicated, batch): the carry's sharding and the batch's (leading axis over batch_axis)."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or None; got {type(mesh).__name__}")
    if batch_axis not in mesh.axis_names:
        raise ValueError(
            f"batch_axis {batch_axis!r} is not an axis of the mesh, whose axes are "
            f"{list(mesh.axis_names)}"
        )
    P = jax.sharding.PartitionSpec
    return jax.sharding.NamedSharding(mesh, P()), jax.sharding.NamedSharding(mesh, P(batch_axis))


def _local_batch_shards(mesh: jax.sharding.Mesh, batch_axis: str) -> int:
    """How many slices of the batch axis this process's devices hold (all of them when there is
    one process): the local batch must split evenly into that many."""
    axis = mesh.axis_names.index(batch_axis)
    me = jax.process_index()
    positions = {
        index[axis]
        for index, device in zip(
            itertools.product(*map(range, mesh.devices.shape)), mesh.devices.flat, strict=True
        )
        if device.process_index == me
    }
    return len(positions)


def _shard_batch(
    batch: Batch, sharding: jax.sharding.NamedSharding, batch_axis: str, shards: int
) -> Batch:
    """Every leaf of ``batch`` as one global array split along its leading axis.

    With one process ``batch`` is the whole batch. With several (``jax.distributed``), it is this
    process's share, the global batch being the processes' shares concatenated in process order.
    ``shards`` is ``_local_batch_shards(sharding.mesh, batch_axis)``.
    """
    multi_process = jax.process_count() > 1

    def shard(leaf: Any) -> Array:
        shape = jnp.shape(leaf)
        if len(shape) == 0 or shape[0] % shards != 0:
            where = "this process's share of the batch" if multi_process else "the batch"
            raise ValueError(
                f"data-parallel fit: the leading (batch) axis of {where} must divide into "
                f"{shards} equal parts (the mesh's {shards} slices along {batch_axis!r}"
                f"{' held by this process' if multi_process else ''}); got a leaf of shape "
                f"{show(tuple(shape))}"
            )
        if multi_process:
            return jax.make_array_from_process_local_data(sharding, leaf)
        return jax.device_put(leaf, sharding)

    return jax.tree.map(shard, batch)


def _placed(tree: Any, like: Any, sharding: jax.sharding.Sharding) -> Any:
    """``tree``'s values in new buffers, with ``like``'s dtypes (strongly typed) on ``sharding``.

    The jitted step's cache key holds every argument's dtype, weak type, sharding and whether it
    is committed to a device. A fresh run's params (uncommitted, maybe weakly typed) and the arrays
    orbax restores (committed) differ in those, so a resumed run used to compile the step again,
    twice. Placing both the same way makes one compilation serve fresh and resumed runs alike.
    The copy also keeps the step's buffer donation from deleting the caller's arrays.
    """

    def place(leaf: Any, template: Any) -> Array:
        if not sharding.is_fully_addressable:  # multi-process: every process holds the values
            value = np.array(leaf, dtype=jnp.result_type(template), copy=True)
            return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
        copy = jnp.array(leaf, dtype=jnp.result_type(template), copy=True)
        return jax.device_put(copy, sharding)

    return jax.tree.map(place, tree, like)


def _scalar_on(value: float, dtype: Any, sharding: jax.sharding.Sharding) -> Array:
    """A committed, strongly typed scalar on ``sharding`` (replicated when it spans processes)."""
    if sharding.is_fully_addressable:
        return jax.device_put(jnp.asarray(value, dtype), sharding)
    host = np.asarray(value, dtype)
    return jax.make_array_from_callback((), sharding, lambda index: host[index])


def _replicated_key(key: PRNGKey, sharding: jax.sharding.Sharding) -> PRNGKey:
    """``key`` (raw uint32 or typed) committed to ``sharding``, replicated across processes too."""
    if sharding.is_fully_addressable:
        return jax.device_put(key, sharding)
    typed = jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key)
    host = np.asarray(jax.random.key_data(key) if typed else key)
    data = jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key)) if typed else data


def _initial_state(
    params: Params,
    opt_state: Any,
    step: int,
    like: tuple[Params, Any],
    sharding: jax.sharding.Sharding | None = None,
) -> _TrainState:
    """The step's carry, every leaf committed to one device (see ``_placed``), or replicated
    over a mesh when ``sharding`` is given."""
    if sharding is None:
        sharding = _home_sharding(like[0])
    params, opt_state = _placed((params, opt_state), like, sharding)

    def scalar(value: float, dtype: Any) -> Array:
        return _scalar_on(value, dtype, sharding)

    return _TrainState(
        params=params,
        opt_state=opt_state,
        step=scalar(step, jnp.int32),
        bad_step=scalar(-1, jnp.int32),
        bad_loss=scalar(0.0, jnp.float32),
        bad_grad_norm=scalar(0.0, jnp.float32),
        loss_sum=scalar(0.0, jnp.float32),
    )


@contextlib.contextmanager
def _sync_point(reason: str) -> Iterator[None]:
    """Marks the loop's only device->host reads: log points, evaluations, checkpoints, the end.

    Inside, device->host transfers are allowed even when the caller runs ``fit`` under
    ``jax.transfer_guard_device_to_host("disallow")``, so such a guard catches any read that
    happens anywhere else in the loop (on accelerators; on CPU the guard never fires, as arrays
    there are read without a copy). ``reason`` names the sync for tests that count them.
    """
    del reason
    with jax.transfer_guard_device_to_host("allow"):
        yield


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None; got {show(value)}")


def _new_history(num_steps: int) -> dict[str, Any]:
    return {"log_steps": [], "loss": [], "eval": [], "num_steps": num_steps}


def _write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a metrics file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=True))
    os.replace(tmp, path)


def _path_string(path: tuple) -> str:
    """A leaf's path as orbax's metadata spells it: every key as ``['name']`` or ``[index]``
    (so ``ScaleByAdamState.mu`` reads ``['mu']``, as in orbax's tree metadata)."""
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(f"[{entry.idx}]")
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(f"[{entry.name!r}]")
        elif isinstance(entry, jax.tree_util.DictKey):
            parts.append(f"[{entry.key!r}]")
        else:
            parts.append(jax.tree_util.keystr((entry,)))
    return "".join(parts)


def _tree_signature(tree: Any) -> dict[str, Any]:
    """What a checkpoint must match to be this run's: tree structure, leaf paths, shapes, dtypes.

    JSON-serialisable: ``{"treedef": str, "leaves": [[path, shape, dtype], ...]}``.
    Leaves may be arrays or anything with ``.shape`` and ``.dtype`` (orbax's metadata).
    """
    leaves, structure = jax.tree_util.tree_flatten_with_path(tree)
    return {
        "treedef": str(structure),
        "leaves": [
            [_path_string(path), [int(d) for d in leaf.shape], str(jnp.dtype(leaf.dtype))]
            for path, leaf in leaves
        ],
    }


def _signature_difference(stored: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """A one-line description of the first difference between two signatures, or None.

    A stored ``treedef`` of ``None`` (read from orbax's metadata) is not compared.
    """
    stored_leaves = {path: (shape, dtype) for path, shape, dtype in stored["leaves"]}
    expected_leaves = {path: (shape, dtype) for path, shape, dtype in expected["leaves"]}
    params_first = sorted(expected_leaves, key=lambda path: not path.startswith("['params']"))
    for path in params_first:
        shape, dtype = expected_leaves[path]
        if path not in stored_leaves:
            return f"the checkpoint has no leaf {path} (expected {dtype}{shape})"
        if stored_leaves[path] != (shape, dtype):
            stored_shape, stored_dtype = stored_leaves[path]
            return f"leaf {path} is {stored_dtype}{stored_shape} there, {dtype}{shape} here"
    for path, (shape, dtype) in stored_leaves.items():
        if path not in expected_leaves:
            return f"the checkpoint has a leaf {path} ({dtype}{shape}) that this run does not"
    if stored["treedef"] is not None and stored["treedef"] != expected["treedef"]:
        return f"tree structure {stored['treedef']} there, {expected['treedef']} here"
    return None


class CheckpointMismatchError(ValueError):
    """``checkpoint_dir`` holds a checkpoint that is not this run's (another model, optimizer or
    dtype), or one past ``num_steps``."""


class _Checkpoints:
    """A thin wrapper over ``orbax.checkpoint.CheckpointManager``.

    Each checkpoint holds three items: ``state`` (params and optimizer state), ``history`` (JSON)
    and ``signature`` (JSON, ``_tree_signature`` of the state) to refuse another model's files.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int | None) -> None:
        import orbax.checkpoint as ocp  # imported lazily: only runs with checkpoints pay for it

        self._ocp = ocp
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "history": ocp.JsonCheckpointHandler(),
            "signature": ocp.JsonCheckpointHandler(),
        }
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def _mismatch(self, step: int, detail: str) -> CheckpointMismatchError:
        return CheckpointMismatchError(
            f"checkpoint_dir {self.directory} holds another model's checkpoint (step {step}): "
            f"{detail}. Use a new checkpoint_dir for this model, or delete that directory."
        )

    def _stored_signature(self, step: int) -> dict[str, Any]:
        """The saved signature; for checkpoints written before signatures existed, one built
        from orbax's metadata of the state (leaves only: it has no tree structure to compare)."""
        ocp = self._ocp
        if (self.directory / str(step) / "signature").exists():
            restored = self._manager.restore(
                step, args=ocp.args.Composite(signature=ocp.args.JsonRestore())
            )
            return dict(restored.signature)
        metadata = self._manager.item_metadata(step)["state"]
        return {**_tree_signature(metadata), "treedef": None}

    def restore(
        self,
        step: int,
        params: Params,
        opt_state: Any,
        sharding: jax.sharding.Sharding | None = None,
    ) -> tuple[Params, Any, dict]:
        """Params, optimizer state and history of checkpoint ``step``; the given params and
        optimizer state supply the expected structure, shapes and dtypes, and ``sharding`` (if
        given) where the restored arrays are placed.

        Raises:
          CheckpointMismatchError: the checkpoint holds a different tree.
        """
        ocp = self._ocp
        expected = {"params": params, "opt_state": opt_state}
        try:
            stored = self._stored_signature(step)
        except Exception:  # unreadable metadata: the restore below reports what is wrong
            stored = None
        if stored is not None:
            difference = _signature_difference(stored, _tree_signature(expected))
            if difference is not None:
                raise self._mismatch(step, difference)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, expected)
        if sharding is not None:
            abstract = jax.tree.map(
                lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                abstract,
            )
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()
                ),
            )
        except Exception as error:  # an unsigned checkpoint of another tree: orbax's own error
            raise self._mismatch(step, f"orbax could not restore it ({type(error).__name__}: "
                                 f"{error})") from error  # fmt: skip
        return restored.state["params"], restored.state["opt_state"], dict(restored.history)

    def save(self, step: int, params: Params, opt_state: Any, history: dict) -> None:
        ocp = self._ocp
        state = {"params": params, "opt_state": opt_state}
        # Saving is asynchronous: orbax copies the arrays to host memory before save() returns,
        # so the next step may donate (overwrite) the device buffers while files are written.
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                # A snapshot: the history keeps growing while an async save is still writing.
                history=ocp.args.JsonSave(json.loads(json.dumps(history))),
                signature=ocp.args.JsonSave(_tree_signature(state)),
            ),
            force=True,
        )

    def close(self) -> None:
        """Wait for pending saves to land on disk, then release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def _restore_or_start(
    checkpoints: _Checkpoints | None,
    num_steps: int,
    params: Params,
    opt_state: Any,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[Params, Any, dict[str, Any], int]:
    """(params, opt_state, history, start_step): from the latest checkpoint, or fresh."""
    history = _new_history(num_steps)
    latest = None if checkpoints is None else checkpoints.latest_step()
    if latest is None:
        return params, opt_state, history, 0
    if latest > num_steps:
        raise CheckpointMismatchError(
            f"checkpoint_dir {checkpoints.directory} holds a checkpoint at step {int(latest)}, "
            f"past num_steps={num_steps}; fit never returns params from beyond num_steps. Use a "
            f"new checkpoint_dir, or num_steps >= {int(latest)} to continue that run."
        )
    params, opt_state, history = checkpoints.restore(latest, params, opt_state, sharding)
    history["num_steps"] = num_steps
    return params, opt_state, history, int(latest)


class _PlainProgress:
    """Progress for logs (stderr not a terminal): a few whole lines instead of a redrawn bar.

    One line at each log point that first reaches a quarter of the run (25/50/75 %) and one at
    the end: ``"<description>: step 750/1000 (75%), loss 1.234, 512 steps/s"``.
    """

    def __init__(self, description: str, start_step: int, num_steps: int, stream: Any) -> None:
        self.description = description
        self.num_steps = num_steps
        self.stream = stream
        self.started = time.perf_counter()
        self.start_step = start_step
        quarters = [math.ceil(k * num_steps / 4) for k in (1, 2, 3)]
        self.marks = [mark for mark in quarters if mark > start_step]

    def update(self, done: int) -> None:
        del done  # lines are written at log points only, where the loss is known

    def log(self, done: int, loss: float) -> None:
        if done < self.num_steps and not (self.marks and done >= self.marks[0]):
            return
        while self.marks and done >= self.marks[0]:
            self.marks.pop(0)
        elapsed = time.perf_counter() - self.started
        rate = (done - self.start_step) / elapsed if elapsed > 0 else math.nan
        percent = 100.0 * done / self.num_steps
        print(
            f"{self.description}: step {done}/{self.num_steps} ({percent:.0f}%), "
            f"loss {loss:.4g}, {rate:.0f} steps/s",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        pass


class _BarProgress:
    """A tqdm bar with the latest logged loss (for a terminal)."""

    def __init__(self, description: str, start_step: int, num_steps: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=num_steps, initial=start_step, desc=description, dynamic_ncols=True)

    def update(self, done: int) -> None:
        self.bar.update(done - self.bar.n)

    def log(self, done: int, loss: float) -> None:
        self.update(done)
        self.bar.set_postfix(loss=f"{loss:.4g}")

    def close(self) -> None:
        self.bar.close()


class _NoProgress:
    def update(self, done: int) -> None:
        pass

    def log(self, done: int, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_reporter(
    progress: bool | None, description: str, start_step: int, num_steps: int
) -> _PlainProgress | _BarProgress | _NoProgress:
    """``True``: a tqdm bar; ``False``: nothing; ``None``: a bar when stderr is a terminal,
    else ``_PlainProgress`` lines (readable in log files and CI output)."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        if not (isatty is not None and isatty()):
            return _PlainProgress(description, start_step, num_steps, sys.stderr)
        progress = True
    if progress:
        return _BarProgress(description, start_step, num_steps)
    return _NoProgress()


def fit(
    loss_fn: LossFn,
    params: Params,
    optimizer: optax.GradientTransformation,
    batch_fn: BatchFn,
    num_steps: int,
    *,
    key: PRNGKey,
    eval_fn: EvalFn | None = None,
    eval_every: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = 1000,
    max_checkpoints_to_keep: int | None = 3,
    metrics_path: str | os.PathLike | None = None,
    progress: bool | None = None,
    description: str = "fit",
    log_every: int = 100,
    mesh: jax.sharding.Mesh | None = None,
    batch_axis: str = "data",
) -> TrainResult:
    """Minimise ``loss_fn`` with ``optimizer`` for ``num_steps`` steps (in total, across resumes).

    Without ``mesh`` the run lives on one device: the params' (or JAX's default). Its carry is
    placed the same way whether fresh or restored, so the step compiles once per (loss_fn,
    optimizer, shapes) in a process, however often ``fit`` is called or resumed.

    Data-parallel training. With ``mesh`` the params and optimizer state are replicated over all
    its devices (``NamedSharding(mesh, P())``) and every leaf of each batch is split along its
    leading axis over the mesh axis ``batch_axis`` (``NamedSharding(mesh, P(batch_axis))``). The
    step is the same program: XLA computes each device's part of a loss such as a batch mean and
    all-reduces it and the gradients, so the run follows the single-device trajectory up to the
    order of float summation. The batch size must divide by the number of devices along
    ``batch_axis``. Multi-process (after ``jax.distributed.initialize``, ``mesh`` over
    ``jax.devices()``): every process calls ``fit`` with the same arguments, and its
    ``batch_fn(step)`` returns only its own share of the global batch (``global_batch /
    process_count`` rows); the global batch is the shares concatenated in process order (as
    ``jax.make_array_from_process_local_data`` builds it). Loss history and params are then the
    same on every process; only process 0 writes ``metrics_path``. Checkpoints work with a mesh
    in one process; across processes ``checkpoint_dir`` must be one directory shared by all of
    them (orbax writes it collectively), a setup this library does not test.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> scalar``, jit-able.
      params: the initial params (a pytree). Never modified: the loop works on a copy.
      optimizer: any ``optax.GradientTransformation``; its state comes from ``optimizer.init``.
      batch_fn: ``batch_fn(step) -> batch``, a deterministic function of the 0-based step index
        (e.g. ``nflows_jax.data.batches``); needed for exact resumption.
      num_steps: total number of optimisation steps.
      key: PRNG key; step ``s`` receives ``jax.random.fold_in(key, s)``.
      eval_fn: ``eval_fn(params) -> {name: float}``, called after every ``eval_every`` steps and
        after the last step; recorded in ``history["eval"]``. It must not keep references to
        ``params``: the step donates their buffers, so a stored copy would be deleted under it.
      eval_every: evaluation period in steps (``None``: only after the last step).
      checkpoint_dir: where to save/resume. When it holds a checkpoint, training resumes from the
        latest one (the given ``params`` then only supply the tree structure) and the history
        saved with it is continued. Params are reproduced exactly; the logged mean losses match
        an uninterrupted run's when ``checkpoint_every`` is a multiple of ``log_every``. A
        checkpoint of another tree (model, optimizer or dtype) or one past ``num_steps`` raises
        ``CheckpointMismatchError`` before any step is taken.
      checkpoint_every: checkpoint period in steps (``None``: only after the last step). A
        checkpoint is always written after the last step when ``checkpoint_dir`` is set.
      max_checkpoints_to_keep: only the newest this many checkpoints are kept (``None``: all).
      metrics_path: write ``history`` as JSON there (after the run, at each checkpoint and when
        a ``NonFiniteLossError`` is raised, with ``history["error"]`` naming the bad step).
      progress: ``True``: a tqdm bar with the current loss; ``False``: print nothing; ``None``
        (default): the bar when stderr is a terminal, otherwise (log files, CI, pipes) a few
        plain lines on stderr, at 25/50/75 % and at the end, each
        ``"<description>: step s/num_steps (p%), loss l, r steps/s"``.
      description: the progress label (e.g. the dataset and model being fitted).
      log_every: record the loss, update the progress and check the NaN flag every this many
        steps. These log points (with evaluations, checkpoints and the end) are the only places
        the loop reads from the device; between them steps are only dispatched.
      mesh: a ``jax.sharding.Mesh`` for data-parallel training (see above); ``None``: one device.
      batch_axis: the mesh axis the batch's leading axis is split over.

    Returns:
      ``TrainResult(params, opt_state, history)``.

    Raises:
      NonFiniteLossError: a loss or gradient norm was NaN/inf; ``.params`` are the last finite
        params and ``.step`` the bad step.
      CheckpointMismatchError: (a ``ValueError``) ``checkpoint_dir`` holds another model's
        checkpoint, or one past ``num_steps``.
    """
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative int; got {show(num_steps)}")
    if log_every is None:
        raise ValueError("log_every must be a positive int; got None")
    _check_positive("log_every", log_every)
    _check_positive("eval_every", eval_every)
    _check_positive("checkpoint_every", checkpoint_every)
    if mesh is None:
        carry_sharding = batch_sharding = None
    else:
        carry_sharding, batch_sharding = _mesh_shardings(mesh, batch_axis)

    fresh_opt_state = optimizer.init(params)
    checkpoints = (
        None if checkpoint_dir is None else _Checkpoints(checkpoint_dir, max_checkpoints_to_keep)
    )
    try:
        restored_params, opt_state, history, start_step = _restore_or_start(
            checkpoints, num_steps, params, fresh_opt_state, carry_sharding
        )
    except BaseException:
        if checkpoints is not None:
            checkpoints.close()
        raise
    history["start_step"] = start_step
    state = _initial_state(
        restored_params, opt_state, start_step, (params, fresh_opt_state), carry_sharding
    )
    train_step = _train_step_for(loss_fn, optimizer, carry_sharding)
    home = _home_sharding(params) if carry_sharding is None else carry_sharding
    if carry_sharding is None:
        next_batch = batch_fn
    else:
        key = _replicated_key(key, carry_sharding)
        local_shards = _local_batch_shards(mesh, batch_axis)

        def next_batch(step: int) -> Batch:
            return _shard_batch(batch_fn(step), batch_sharding, batch_axis, local_shards)

    writes_metrics = metrics_path is not None and jax.process_index() == 0

    def finish_metrics(steps_run: int, started: float, first_step_done: float | None) -> None:
        elapsed = time.perf_counter() - started
        history["steps_run"] = steps_run
        history["wall_time_s"] = elapsed
        history["steps_per_second"] = steps_run / elapsed if elapsed > 0 else math.nan
        after_compile = None
        if first_step_done is not None and steps_run > 1:
            after_compile = (steps_run - 1) / max(time.perf_counter() - first_step_done, 1e-12)
        history["steps_per_second_after_compile"] = after_compile

    flag_read_at = None  # the step count at which the NaN flag was last read (already synced)

    def raise_if_non_finite(state: _TrainState, fetched_bad_step: int | None = None) -> None:
        nonlocal flag_read_at
        if fetched_bad_step is None:
            if flag_read_at == done:  # read at this step's log point: no second sync
                return
            with _sync_point("nan_check"):
                fetched_bad_step = int(jax.device_get(state.bad_step))
        flag_read_at = done
        if fetched_bad_step >= 0:
            with _sync_point("error"):
                bad_loss, bad_grad_norm = jax.device_get((state.bad_loss, state.bad_grad_norm))
            error = NonFiniteLossError(
                fetched_bad_step,
                state.params,
                state.opt_state,
                float(bad_loss),
                float(bad_grad_norm),
            )
            history["error"] = str(error)
            raise error

    started = time.perf_counter()
    first_step_done = None
    last_log_step = start_step
    done = start_step
    reporter = _progress_reporter(progress, description, start_step, num_steps)
    try:
        for step in range(start_step, num_steps):
            state = train_step(state, next_batch(step), key)
            done = step + 1
            reporter.update(done)
            if first_step_done is None:
                # Waits (no transfer) once, so the after-compile rate excludes compilation.
                jax.block_until_ready(state.loss_sum)
                first_step_done = time.perf_counter()

            if done % log_every == 0 or done == num_steps:
                # One device->host transfer per log point; it doubles as the NaN check.
                with _sync_point("log"):
                    bad_step, loss_sum = jax.device_get((state.bad_step, state.loss_sum))
                raise_if_non_finite(state, int(bad_step))
                mean_loss = float(loss_sum) / (done - last_log_step)
                history["log_steps"].append(done)
                history["loss"].append(mean_loss)
                reporter.log(done, mean_loss)
                # A new committed zero: the old one was donated, and an uncommitted one would
                # change the step's cache key (one more compilation).
                zero = _scalar_on(0.0, jnp.float32, home)
                state = state._replace(loss_sum=zero)
                last_log_step = done

            if eval_fn is not None and (
                done == num_steps or (eval_every is not None and done % eval_every == 0)
            ):
                raise_if_non_finite(state)
                with _sync_point("eval"):
                    results = {name: float(value) for name, value in eval_fn(state.params).items()}
                history["eval"].append({"step": done, **results})

            if checkpoints is not None and (
                done == num_steps or (checkpoint_every is not None and done % checkpoint_every == 0)
            ):
                raise_if_non_finite(state)
                with _sync_point("checkpoint"):
                    checkpoints.save(done, state.params, state.opt_state, history)
                if writes_metrics:
                    finish_metrics(done - start_step, started, first_step_done)
                    _write_json(metrics_path, history)
    except NonFiniteLossError:
        if writes_metrics:
            finish_metrics(done - start_step, started, first_step_done)
            _write_json(metrics_path, history)
        raise
    finally:
        reporter.close()
        if checkpoints is not None:
            with _sync_point("checkpoint"):
                checkpoints.close()

    finish_metrics(
        num_steps - start_step if num_steps > start_step else 0, started, first_step_done
    )
    if writes_metrics:
        _write_json(metrics_path, history)
    return TrainResult(state.params, state.opt_state, history)


class EpochsResult(NamedTuple):
    """What :func:`fit_epochs` returns.

    Attributes:
      params: the params of the best epoch (lowest ``select`` metric), read back from
        ``best_params.msgpack`` after a resume.
      epochs: one dict per finished epoch: ``epoch``, ``step``, ``train_loss`` (mean logged
        training loss of the epoch), every metric of ``evaluate``, ``epoch_s`` (training and
        evaluation wall time of the epoch) and ``elapsed_s`` (the total over all epochs, resumes
        included).
      best_epoch: the epoch whose params are ``params``.
      stopped: why training ended: ``"epochs"``, ``"minutes"`` or ``"patience"``.
    """

    params: Params
    epochs: list[dict[str, float]]
    best_epoch: int
    stopped: str


def _latest_checkpoint_step(directory: Path) -> int:
    """The newest step saved under ``directory`` (orbax names step folders by number), or 0."""
    steps = [int(p.name) for p in directory.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(steps, default=0)


def fit_epochs(
    loss_fn: LossFn,
    params: Params,
    optimizer: optax.GradientTransformation,
    batch_fn: BatchFn,
    steps_per_epoch: int,
    num_epochs: int,
    *,
    key: PRNGKey,
    out_dir: str | os.PathLike,
    evaluate: EvalFn,
    select: str,
    minutes: float = math.inf,
    patience: int | None = None,
    description: str = "epoch",
    log_every: int = 100,
) -> EpochsResult:
    """:func:`fit` epoch by epoch under a wall-time budget, keeping the best params; resumable.

    An "epoch" is ``steps_per_epoch`` steps (a pass over the data, or any evaluation period).
    After each one ``evaluate(params) -> {name: float}`` runs (e.g. validation NLL); the params
    with the lowest ``evaluate(...)[select]`` are kept. Everything lives under ``out_dir``:
    ``checkpoints/`` (the latest :func:`fit` checkpoint), ``epochs.json`` (the per-epoch rows)
    and ``best_params.msgpack``. A call with the same arguments and ``out_dir`` resumes after the
    last finished epoch and continues the wall-time count, so ``minutes`` budgets the whole run
    across resumes. An epoch is not started when the previous epoch's duration says it would
    end past the budget; ``patience`` stops after that many epochs without a new best.

    Returns:
      :class:`EpochsResult`. Raises ``ValueError`` when no epoch finished (zero budget).
    """
    import flax.serialization  # the only flax use in this module

    _check_positive("steps_per_epoch", steps_per_epoch)
    if not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs must be a positive int; got {show(num_epochs)}")
    _check_positive("patience", patience)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints, rows_path, best_path = (
        out / "checkpoints",
        out / "epochs.json",
        out / "best_params.msgpack",
    )
    done = _latest_checkpoint_step(checkpoints) // steps_per_epoch
    rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
    rows = [row for row in rows if row["epoch"] <= done]
    best = min(rows, key=lambda row: row[select]) if rows and best_path.exists() else None
    best_params = None
    if best is not None:
        best_params = flax.serialization.from_bytes(params, best_path.read_bytes())
    elapsed = rows[-1]["elapsed_s"] if rows else 0.0
    last_epoch_s = rows[-1]["epoch_s"] if rows else 0.0
    stopped = "epochs"
    for epoch in range(len(rows) + 1, num_epochs + 1):
        if elapsed + last_epoch_s > minutes * 60:
            stopped = "minutes"
            break
        if best is not None and patience is not None and epoch - 1 - best["epoch"] >= patience:
            stopped = "patience"
            break
        start = time.perf_counter()
        result = fit(
            loss_fn,
            params,
            optimizer,
            batch_fn,
            epoch * steps_per_epoch,
            key=key,
            checkpoint_dir=checkpoints,
            checkpoint_every=steps_per_epoch,
            max_checkpoints_to_keep=1,
            progress=None,
            description=f"{description} {epoch}",
            log_every=min(log_every, steps_per_epoch),
        )
        params = result.params
        losses = [
            loss
            for step, loss in zip(result.history["log_steps"], result.history["loss"], strict=True)
            if step > (epoch - 1) * steps_per_epoch
        ]
        metrics = {name: float(value) for name, value in evaluate(params).items()}
        if select not in metrics:
            raise KeyError(
                f"evaluate returned {sorted(metrics)}; select={select!r} is not among them"
            )
        last_epoch_s = time.perf_counter() - start
        elapsed += last_epoch_s
        row = {
            "epoch": epoch,
            "step": epoch * steps_per_epoch,
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            **metrics,
            "epoch_s": last_epoch_s,
            "elapsed_s": elapsed,
        }
        rows.append(row)
        if best is None or metrics[select] < best[select]:
            best, best_params = row, jax.device_get(params)
            best_path.write_bytes(flax.serialization.to_bytes(best_params))
        _write_json(rows_path, rows)
        shown = ", ".join(f"{name} {value:.3f}" for name, value in metrics.items())
        print(
            f"{description} {epoch}: train loss {row['train_loss']:.3f}, {shown}"
            f"{' (best)' if best is row else ''} [{last_epoch_s:.0f} s, {elapsed / 60:.1f} min]",
            flush=True,
        )
    if best_params is None:
        raise ValueError(f"no epoch finished within minutes={minutes}")
    return EpochsResult(best_params, rows, best["epoch"], stopped)


__all__ = [
    "CheckpointMismatchError",
    "EpochsResult",
    "NonFiniteLossError",
    "TrainResult",
    "fit",
    "fit_epochs",
]
