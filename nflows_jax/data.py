"""Data: toy 2-D samplers, image datasets as uint8 NHWC arrays, and seeded batching.

Toy data (each ``sampler(key, n) -> (n, 2) float32``, jit-able with ``n`` static)::

    x = sample_toy("two_moons", jax.random.PRNGKey(0), 1024)

Images (``ImageDataset(images (N, H, W, C) uint8, labels (N,) int32 or None)``)::

    digits = load_digits()                          # sklearn, offline, 8x8x1 in 0..16
    train = load_dataset("fashion_mnist", "train")  # local IDX files (or a prepared tfds copy)
    cifar = load_dataset("cifar10", "train", download=True)  # tensorflow-datasets may download
    valid = load_dataset("binarized_mnist", "valid", data_dir="../shared/data")

Batches for ``nflows_jax.train.fit`` (any step's batch is computable directly: exact resumes)::

    batch_fn = batches(train.images, batch_size=128, seed=0)
    batch = batch_fn(step)
"""

from __future__ import annotations

import gzip
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nflows_jax.formatting import show

Array = jax.Array
PRNGKey = jax.Array
ToySampler = Callable[[PRNGKey, int], Array]

# ---------------------------------------------------------------------------------------------
# Toy 2-D densities. Each is a mixture or a transformed simple density, scaled to lie roughly in
# [-4, 4]^2 so that one standard-normal-based flow fits all of them. Layouts follow the shapes
# popularised by the FFJORD / neural-spline-flow toy benchmarks, written from their descriptions.
# ---------------------------------------------------------------------------------------------


def _check_n(n: int) -> None:
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int (a static sample count); got {show(n)}")


def two_moons(key: PRNGKey, n: int, noise: float = 0.1) -> Array:
    """Two interleaved half circles (as sklearn's ``make_moons``), scaled by 2 and centred.

    Each point picks a moon with probability 1/2, an angle t ~ U(0, π), lies on
    (cos t, sin t) or (1 - cos t, 1/2 - sin t), gets N(0, noise²) jitter, and is mapped by
    x -> 2x - (1, 0.5) so the picture is centred at the origin. Returns (n, 2) float32.
    """
    _check_n(n)
    k_moon, k_angle, k_noise = jax.random.split(key, 3)
    lower = jax.random.bernoulli(k_moon, 0.5, (n,))
    t = jax.random.uniform(k_angle, (n,), minval=0.0, maxval=jnp.pi)
    upper_xy = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1)
    lower_xy = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=-1)
    points = jnp.where(lower[:, None], lower_xy, upper_xy)
    points = points + noise * jax.random.normal(k_noise, (n, 2))
    return (2.0 * points - jnp.array([1.0, 0.5])).astype(jnp.float32)


def eight_gaussians(key: PRNGKey, n: int, radius: float = 2.0 * math.sqrt(2.0), std: float = 0.35):
    """Equal mixture of 8 isotropic Gaussians (std ``std``) centred on a circle of ``radius``.

    The centres are at angles 2πk/8, k = 0..7. Returns (n, 2) float32.
    """
    _check_n(n)
    k_comp, k_noise = jax.random.split(key)
    angle = 2.0 * jnp.pi * jax.random.randint(k_comp, (n,), 0, 8) / 8.0
    centres = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return (centres + std * jax.random.normal(k_noise, (n, 2))).astype(jnp.float32)


def checkerboard(key: PRNGKey, n: int) -> Array:
    """Uniform on the 8 "black" squares of a 4x4 board of side-2 squares covering [-4, 4]^2.

    A point (x1, x2) is on the support iff floor(x1 / 2) + floor(x2 / 2) is even. Sampled by
    drawing x1 ~ U(-4, 4), then one of the two rows whose parity matches x1's column, then a
    uniform offset inside that square. Returns (n, 2) float32.
    """
    _check_n(n)
    k_x1, k_row, k_offset = jax.random.split(key, 3)
    x1 = jax.random.uniform(k_x1, (n,), minval=-4.0, maxval=4.0)
    column = jnp.floor(x1 / 2.0)  # in {-2, -1, 0, 1}
    # Rows are {-2, -1, 0, 1}; the allowed ones have the column's parity: 2j + (column mod 2) - 2.
    row = 2.0 * jax.random.randint(k_row, (n,), 0, 2) + jnp.mod(column, 2.0) - 2.0
    x2 = 2.0 * row + jax.random.uniform(k_offset, (n,), minval=0.0, maxval=2.0)
    return jnp.stack([x1, x2], axis=-1).astype(jnp.float32)


def pinwheel(
    key: PRNGKey,
    n: int,
    num_arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
) -> Array:
    """Spiral arms: Gaussian blobs at (1, 0) rotated by their arm's angle plus a twist.

    A point gets f = (1 + radial_std ε1, tangential_std ε2), an arm k ~ U{0..num_arms-1}, and is
    rotated by 2πk/num_arms + rate · exp(f1), which bends each blob into an arm; then scaled by 2.
    Returns (n, 2) float32.
    """
    _check_n(n)
    k_feat, k_arm = jax.random.split(key)
    eps = jax.random.normal(k_feat, (n, 2))
    features = jnp.array([1.0, 0.0]) + eps * jnp.array([radial_std, tangential_std])
    arm = jax.random.randint(k_arm, (n,), 0, num_arms)
    angle = 2.0 * jnp.pi * arm / num_arms + rate * jnp.exp(features[:, 0])
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x = cos * features[:, 0] - sin * features[:, 1]
    y = sin * features[:, 0] + cos * features[:, 1]
    return (2.0 * jnp.stack([x, y], axis=-1)).astype(jnp.float32)


def two_spirals(key: PRNGKey, n: int, noise: float = 0.1) -> Array:
    """Two interleaved Archimedean spirals, each 1.5 turns long.

    t = 3π √u with u ~ U(0, 1) (denser towards the outside, like points uniform along the arc),
    the point t (-cos t, sin t) / 3 is reflected through the origin for the second spiral, and
    N(0, noise²) jitter is added. Radii reach π ≈ 3.14. Returns (n, 2) float32.
    """
    _check_n(n)
    k_t, k_arm, k_noise = jax.random.split(key, 3)
    t = 3.0 * jnp.pi * jnp.sqrt(jax.random.uniform(k_t, (n,)))
    sign = jnp.where(jax.random.bernoulli(k_arm, 0.5, (n,)), 1.0, -1.0)
    points = sign[:, None] * t[:, None] * jnp.stack([-jnp.cos(t), jnp.sin(t)], axis=-1) / 3.0
    return (points + noise * jax.random.normal(k_noise, (n, 2))).astype(jnp.float32)


def rings(key: PRNGKey, n: int, radii: Sequence[float] = (0.75, 1.5, 2.25, 3.0), noise=0.08):
    """Concentric circles: a ring picked uniformly, a uniform angle, N(0, noise²) radial jitter.

    Returns (n, 2) float32.
    """
    _check_n(n)
    k_ring, k_angle, k_noise = jax.random.split(key, 3)
    radius = jnp.asarray(radii)[jax.random.randint(k_ring, (n,), 0, len(radii))]
    radius = radius + noise * jax.random.normal(k_noise, (n,))
    angle = jax.random.uniform(k_angle, (n,), minval=0.0, maxval=2.0 * jnp.pi)
    return (radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)).astype(
        jnp.float32
    )


TOY_DATASETS: dict[str, ToySampler] = {
    "two_moons": two_moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "two_spirals": two_spirals,
    "rings": rings,
}


def sample_toy(name: str, key: PRNGKey, n: int) -> Array:
    """Draw ``n`` points from the toy density called ``name`` (a key of ``TOY_DATASETS``).

    Returns (n, 2) float32, like every sampler it dispatches to.
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; valid names: {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name](key, n)


# ---------------------------------------------------------------------------------------------
# Image datasets.
# ---------------------------------------------------------------------------------------------

DIGITS_NUM_LEVELS = 17
"""``load_digits`` pixels are counts in 0..16 (each 8x8 pixel sums a 4x4 block of a 32x32
bitmap), i.e. 17 levels, not 256: use this for dequantization and bits/dim, not 256."""

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "binarized_mnist", "cifar10")
_SPLITS = {
    "digits": ("train", "all"),
    "mnist": ("train", "test"),
    "fashion_mnist": ("train", "test"),
    "binarized_mnist": ("train", "valid", "test"),
    "cifar10": ("train", "test"),
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_BINARIZED_FILE = "binarized_mnist.npz"


class ImageDataset(NamedTuple):
    """Images as uint8 (N, H, W, C) and class labels as int32 (N,), or ``None`` when unlabelled."""

    images: np.ndarray
    labels: np.ndarray | None


def _check_split(name: str, split: str) -> None:
    if name not in _SPLITS:
        raise ValueError(f"unknown image dataset {name!r}; valid names: {list(IMAGE_DATASETS)}")
    if split not in _SPLITS[name]:
        raise ValueError(f"{name} has splits {list(_SPLITS[name])}; got {split!r}")


def load_digits() -> ImageDataset:
    """scikit-learn's handwritten digits (ships in the wheel, never downloads).

    Returns images (1797, 8, 8, 1) uint8 with values in 0..16 (see ``DIGITS_NUM_LEVELS``: 17
    grey levels, not 256) and labels (1797,) int32 in 0..9.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.asarray(bunch.images).astype(np.uint8)[..., None]
    return ImageDataset(images, np.asarray(bunch.target, dtype=np.int32))


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (the MNIST format): big-endian header + data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = raw[0] * 256 + raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or ndim != expected_ndim:
        raise ValueError(
            f"{path}: not an IDX file of uint8 with {expected_ndim} dims "
            f"(header {raw[:4].hex()}; expected 000008{expected_ndim:02x})"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def _as_dirs(data_dir: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    if data_dir is None:
        return default_data_dirs()
    if isinstance(data_dir, str | os.PathLike):
        return [Path(data_dir).expanduser()]
    return [Path(d).expanduser() for d in data_dir]


def _mnist_family_candidates(name: str, split: str, directory: Path) -> list[Path]:
    """Folders that may hold the IDX files: ``directory/name`` first, then ``directory``."""
    del split
    return [directory / name, directory]


def _load_idx_pair(folder: Path, split: str) -> ImageDataset:
    prefix = _IDX_PREFIX[split]
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", expected_ndim=3)
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
    return ImageDataset(images[..., None], labels.astype(np.int32))


def _binarized_candidates(directory: Path) -> list[Path]:
    return [directory / _BINARIZED_FILE, directory / "binarized_mnist" / _BINARIZED_FILE]


def _load_binarized_file(path: Path, split: str) -> ImageDataset:
    with np.load(path) as arrays:
        if split not in arrays:
            raise ValueError(f"{path} has arrays {list(arrays)}; expected {split!r}")
        flat = np.asarray(arrays[split])
    if flat.ndim != 2 or flat.shape[1] != 784:
        raise ValueError(f"{path}[{split!r}] has shape {flat.shape}; expected (N, 784)")
    if flat.size and flat.max() > 1:
        raise ValueError(f"{path}[{split!r}] holds values above 1; expected binary pixels")
    return ImageDataset(flat.astype(np.uint8).reshape(-1, 28, 28, 1), None)


def _find_local(name: str, split: str, dirs: list[Path]) -> tuple[ImageDataset | None, list[str]]:
    """Try every local place for ``name``; return the data (or None) and the places looked in."""
    looked: list[str] = []
    for directory in dirs:
        if name in ("mnist", "fashion_mnist"):
            for folder in _mnist_family_candidates(name, split, directory):
                image_file = folder / f"{_IDX_PREFIX[split]}-images-idx3-ubyte.gz"
                looked.append(str(image_file))
                if image_file.is_file():
                    return _load_idx_pair(folder, split), looked
        elif name == "binarized_mnist":
            for path in _binarized_candidates(directory):
                looked.append(str(path))
                if path.is_file():
                    return _load_binarized_file(path, split), looked
    return None, looked


def _not_found(name: str, split: str, looked: list[str], extra: str = "") -> FileNotFoundError:
    places = "\n".join(f"  - {p}" for p in looked) or "  (no local places for this dataset)"
    return FileNotFoundError(
        f"could not find dataset {name!r} (split {split!r}). Looked in:\n{places}{extra}"
    )


def default_data_dirs() -> list[Path]:
    """Where ``load_dataset`` looks when no ``data_dir`` is given, in order.

    ``$NFLOWS_JAX_DATA`` (if set), ``<repository>/../shared/data`` (next to the source checkout),
    ``<cwd>/../shared/data``, ``<cwd>/data`` and ``~/.cache/nflows_jax``.
    """
    dirs = []
    if os.environ.get("NFLOWS_JAX_DATA"):
        dirs.append(Path(os.environ["NFLOWS_JAX_DATA"]).expanduser())
    repository = Path(__file__).resolve().parents[1]
    dirs.append(repository.parent / "shared" / "data")
    dirs.append(Path.cwd().parent / "shared" / "data")
    dirs.append(Path.cwd() / "data")
    dirs.append(Path.home() / ".cache" / "nflows_jax")
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def load_mnist_family(
    name: str, split: str, data_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None
) -> ImageDataset:
    """MNIST or Fashion-MNIST from local gzipped IDX files (never downloads).

    Looks for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` in ``data_dir/<name>/`` and then
    in ``data_dir/`` (``data_dir`` may be a list; ``None`` means ``default_data_dirs()``).
    Returns images (N, 28, 28, 1) uint8 in 0..255 and labels (N,) int32: N = 60000 for
    ``"train"``, 10000 for ``"test"``. Raises ``FileNotFoundError`` naming every place looked in.
    """
    if name not in ("mnist", "fashion_mnist"):
        raise ValueError(f"load_mnist_family takes 'mnist' or 'fashion_mnist'; got {name!r}")
    _check_split(name, split)
    data, looked = _find_local(name, split, _as_dirs(data_dir))
    if data is None:
        raise _not_found(name, split, looked)
    return data


def load_binarized_mnist(
    split: str, data_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None
) -> ImageDataset:
    """Statically binarized MNIST (Larochelle & Murray 2011 split) from ``binarized_mnist.npz``.

    The file holds arrays ``train`` (50000, 784), ``valid`` (10000, 784), ``test`` (10000, 784)
    of {0, 1}; looked for as ``data_dir/binarized_mnist.npz`` and
    ``data_dir/binarized_mnist/binarized_mnist.npz``. Returns images (N, 28, 28, 1) uint8 in
    {0, 1} and labels ``None`` (the split is unlabelled). Never downloads.
    """
    _check_split("binarized_mnist", split)
    data, looked = _find_local("binarized_mnist", split, _as_dirs(data_dir))
    if data is None:
        raise _not_found("binarized_mnist", split, looked)
    return data


def tfds_data_dir(data_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> Path:
    """Where ``load_dataset`` keeps tensorflow-datasets files: ``<base>/tensorflow_datasets``.

    ``<base>`` is the (first) given ``data_dir``; with ``None`` it is ``$NFLOWS_JAX_DATA`` when
    set, else ``~/.cache/nflows_jax``. Never ``~/tensorflow_datasets`` (tfds' own default).
    """
    if data_dir is not None:
        base = _as_dirs(data_dir)[0]
    elif os.environ.get("NFLOWS_JAX_DATA"):
        base = Path(os.environ["NFLOWS_JAX_DATA"]).expanduser()
    else:
        base = Path.home() / ".cache" / "nflows_jax"
    return base / "tensorflow_datasets"


def _load_from_tfds(name: str, split: str, tfds_dir: Path, download: bool) -> ImageDataset:
    """Load via tensorflow-datasets, reading (and, with ``download``, writing) only ``tfds_dir``.

    With TensorFlow installed this is ``tfds.as_numpy(tfds.load(..., batch_size=-1))``; without
    it (TensorFlow is not a dependency of this package) the TF-free ``tfds.data_source`` reads an
    array_record copy of the dataset. ``download=False`` reads a prepared copy and never touches
    the network.
    """
    import tensorflow_datasets as tfds

    tfds_split = {"valid": "validation"}.get(split, split)
    try:
        import tensorflow  # noqa: F401  (only to choose the loading path)

        has_tensorflow = True
    except ImportError:
        has_tensorflow = False
    if has_tensorflow:
        arrays = tfds.as_numpy(
            tfds.load(
                name, split=tfds_split, batch_size=-1, data_dir=str(tfds_dir), download=download
            )
        )
        images, labels = arrays["image"], arrays.get("label")
    else:
        source = tfds.data_source(
            name,
            split=tfds_split,
            data_dir=str(tfds_dir),
            download=download,
            builder_kwargs={"file_format": "array_record"},
        )
        examples = [source[i] for i in range(len(source))]
        images = np.stack([example["image"] for example in examples])
        labels = (
            np.array([example["label"] for example in examples]) if "label" in examples[0] else None
        )
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    return ImageDataset(images, None if labels is None else np.asarray(labels, dtype=np.int32))


def load_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    download: bool = False,
) -> ImageDataset:
    """Load an image dataset as uint8 NHWC arrays: local files, else tensorflow-datasets.

    Args:
      name: one of ``IMAGE_DATASETS``: ``digits`` (splits ``train``/``all``, both the full 1797
        images), ``mnist``/``fashion_mnist`` (``train``, ``test``), ``binarized_mnist``
        (``train``, ``valid``, ``test``), ``cifar10`` (``train``, ``test``; tfds only).
      split: the split name.
      data_dir: a folder (or list of folders) holding local copies. When given, only these are
        searched locally, so a call never silently picks up a different copy; when ``None``,
        ``default_data_dirs()`` are searched.
      download: allow tensorflow-datasets to download and prepare the dataset (network; can take
        minutes) into ``tfds_data_dir(data_dir)``, announced on stderr. Without it only local
        files and an already prepared tfds copy in ``tfds_data_dir(data_dir)`` are read, and a
        missing dataset fails at once. Nothing is ever written outside ``tfds_data_dir``.

    Returns:
      ``ImageDataset(images (N, H, W, C) uint8, labels (N,) int32 or None)``.

    Raises:
      FileNotFoundError: no local copy and no prepared tfds copy (``download=False``; the
        message says how to download), or the download failed (e.g. no network). The message
        names the dataset, every path tried and any tfds error.
    """
    _check_split(name, split)
    if name == "digits":
        return load_digits()
    data, looked = _find_local(name, split, _as_dirs(data_dir))
    if data is not None:
        return data
    tfds_dir = tfds_data_dir(data_dir)
    tfds_split = {"valid": "validation"}.get(split, split)
    looked.append(f"a tensorflow-datasets copy of {name!r} in {tfds_dir / name}")
    if not download and not (tfds_dir / name).is_dir():
        hint = (
            f"\nPass download=True to download it with tensorflow-datasets into {tfds_dir} "
            f"(needs network), or put local files in one of the places above."
        )
        raise _not_found(name, split, looked, hint)
    if download:
        print(
            f"load_dataset: {name!r} split {tfds_split!r} via tensorflow-datasets, downloading "
            f"into {tfds_dir} if needed",
            file=sys.stderr,
            flush=True,
        )
    try:
        return _load_from_tfds(name, split, tfds_dir, download)
    except Exception as error:  # no network, TF-less builder, unknown name: all mean "not found"
        looked.append(f"tensorflow-datasets: {name!r} split {tfds_split!r}")
        extra = f"\nThe tensorflow-datasets loader failed with {type(error).__name__}: {error}"
        raise _not_found(name, split, looked, extra) from error


# ---------------------------------------------------------------------------------------------
# Batching.
# ---------------------------------------------------------------------------------------------


class EpochBatches:
    """``batch_fn(step) -> batch``: shuffled minibatches, any step computable directly.

    Step ``s`` falls in epoch ``e = s // steps_per_epoch``; that epoch's order is the permutation
    drawn by ``numpy.random.default_rng([seed, e])`` (NumPy's SeedSequence, the same on every
    platform), and the batch is the slice ``s % steps_per_epoch`` of it. Drop-last semantics: each
    epoch has ``steps_per_epoch = N // batch_size`` full batches and the ``N % batch_size``
    examples at the end of that epoch's permutation are skipped (different ones each epoch), so
    every batch has the same shape and the training step compiles once.
    """

    def __init__(self, data: Any, batch_size: int, seed: int) -> None:
        leaves = jax.tree.leaves(data)
        if not leaves:
            raise ValueError("batches needs at least one array in data")
        sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in leaves}
        if len(sizes) != 1 or -1 in sizes:
            raise ValueError(f"every array in data needs the same leading axis; got sizes {sizes}")
        (num_examples,) = sizes
        if not isinstance(batch_size, int | np.integer) or not 1 <= batch_size <= num_examples:
            raise ValueError(
                f"batch_size must be an int in [1, N={num_examples}]; got {show(batch_size)}"
            )
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int; got {show(seed)}")
        self.data = data
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_examples = num_examples
        self.steps_per_epoch = num_examples // self.batch_size
        self._cached_epoch: int | None = None
        self._cached_order: np.ndarray | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of 0..N-1 that epoch ``epoch`` visits (cached for the current epoch)."""
        if epoch != self._cached_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached_order = rng.permutation(self.num_examples)
            self._cached_epoch = epoch
        return self._cached_order

    def indices(self, step: int) -> np.ndarray:
        """The example indices of batch ``step``: (batch_size,) int."""
        if step < 0:
            raise ValueError(f"step must be >= 0; got {int(step)}")
        epoch, position = divmod(int(step), self.steps_per_epoch)
        start = position * self.batch_size
        return self.epoch_order(epoch)[start : start + self.batch_size]

    def __call__(self, step: int) -> Any:
        index = self.indices(step)
        return jax.tree.map(lambda leaf: leaf[index], self.data)


def batches(data: Any, batch_size: int, seed: int) -> EpochBatches:
    """A deterministic shuffling ``batch_fn(step)`` over ``data`` (an array or pytree of arrays
    sharing the leading axis N). See ``EpochBatches`` for the order and drop-last semantics."""
    return EpochBatches(data, batch_size, seed)


__all__ = [
    "DIGITS_NUM_LEVELS",
    "IMAGE_DATASETS",
    "TOY_DATASETS",
    "EpochBatches",
    "ImageDataset",
    "batches",
    "checkerboard",
    "default_data_dirs",
    "eight_gaussians",
    "load_binarized_mnist",
    "load_dataset",
    "load_digits",
    "load_mnist_family",
    "pinwheel",
    "rings",
    "sample_toy",
    "tfds_data_dir",
    "two_moons",
    "two_spirals",
]
