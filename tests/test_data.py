"""Data: toy samplers, image loaders (local files, tfds fallback, errors) and seeded batches."""

import gzip
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nflows_jax import data
from nflows_jax.data import (
    DIGITS_NUM_LEVELS,
    TOY_DATASETS,
    ImageDataset,
    batches,
    load_binarized_mnist,
    load_dataset,
    load_digits,
    load_mnist_family,
    sample_toy,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "binarized_mnist.npz").is_file(),
    reason=f"no binarized_mnist.npz in {SHARED_DATA} (the offline copies live next to the repo)",
)
needs_shared_fashion_mnist = pytest.mark.skipif(
    not all(
        (SHARED_DATA / "fashion_mnist" / f"{prefix}-{kind}-ubyte.gz").is_file()
        for prefix in ("train", "t10k")
        for kind in ("images-idx3", "labels-idx1")
    ),
    reason=f"no Fashion-MNIST IDX files in {SHARED_DATA / 'fashion_mnist'} (offline copies)",
)

N_TOY = 4000


@pytest.fixture(scope="module")
def toy_samples():
    key = jax.random.PRNGKey(0)
    return {name: np.asarray(jitted(name)(key, N_TOY)) for name in TOY_DATASETS}


def jitted(name):
    return jax.jit(TOY_DATASETS[name], static_argnums=1)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toy_shapes_dtypes_reproducible(name, toy_samples):
    x = toy_samples[name]
    assert x.shape == (N_TOY, 2) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(jitted(name)(jax.random.PRNGKey(0), N_TOY), x)
    other = np.asarray(jitted(name)(jax.random.PRNGKey(1), N_TOY))
    # Independent draws differ by O(1) per coordinate, far beyond allclose's 1e-5 tolerance.
    assert not np.allclose(other, x)
    # Every density lies in [-4, 4]^2 up to its Gaussian jitter; 6 bounds each one with the
    # jitter within 6 σ (the widest, pinwheel: 2·|(1 + 0.3·6, 0.1·6)| = 5.73; eight Gaussians:
    # 2√2 + 6·0.35 = 4.93). P(|z| > 6) = 2e-9 per normal draw: ~2e-5 per dataset (8000 draws).
    assert np.all(np.abs(x) < 6.0), "every toy density is scaled into roughly [-4, 4]^2"
    # Each density has mean 0 (the moons by construction, the others by symmetry): each sample
    # mean coordinate lies within 5 standard errors of 0; false-fail rate 5.7e-7 per coordinate,
    # 7e-6 over the 12 checked.
    standard_error = x.std(axis=0) / math.sqrt(N_TOY)
    assert np.all(np.abs(x.mean(axis=0)) < 5 * standard_error)


def test_sample_toy_eager_matches_jit():
    # Same draws; values agree to float32 rounding (XLA fuses the jitted arithmetic differently).
    # Each coordinate is radius·cos(angle) + std·z: cos and the normal's inverse-erf each carry
    # up to a few ulp of implementation error, the product and the sum one rounding each. An
    # absolute tolerance of 16 eps·max|x| covers 8 ulp-sized errors in each of the two runs.
    eager = np.asarray(sample_toy("eight_gaussians", jax.random.PRNGKey(0), 16))
    compiled = np.asarray(jitted("eight_gaussians")(jax.random.PRNGKey(0), 16))
    tolerance = 16 * np.finfo(np.float32).eps * np.max(np.abs(eager))
    np.testing.assert_allclose(eager, compiled, rtol=0, atol=tolerance)


def test_checkerboard_support(toy_samples):
    x = toy_samples["checkerboard"]
    assert np.all(np.abs(x) <= 4.0)
    cells = np.floor(x / 2.0).astype(int)
    assert np.all((cells.sum(axis=1) % 2) == 0), "points on a white square"
    counts = np.unique(cells, axis=0, return_counts=True)[1]
    # 8 black squares, each with probability 1/8: multinomial counts within 5 standard deviations
    # (normal approximation; false-fail rate 5.7e-7 per square, 5e-6 for the 8). Power: a square
    # with probability 1/16 instead (a wrong parity rule) is off by 250 = 12 standard deviations.
    assert len(counts) == 8
    sd = math.sqrt(N_TOY * (1 / 8) * (7 / 8))
    assert np.all(np.abs(counts - N_TOY / 8) < 5 * sd)


def test_eight_gaussians_and_rings_support(toy_samples):
    x = toy_samples["eight_gaussians"]
    angles = 2 * np.pi * np.arange(8) / 8
    centres = 2 * math.sqrt(2) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    nearest = np.min(np.linalg.norm(x[:, None] - centres, axis=-1), axis=1)
    # |noise|² / σ² ~ χ²₂, so P(|noise| > 6σ) = e^-18 = 1.5e-8 per point, 6e-5 for 4000.
    assert np.all(nearest < 6 * 0.35)
    radius = np.linalg.norm(toy_samples["rings"], axis=1)
    distance_to_ring = np.min(np.abs(radius[:, None] - np.array([0.75, 1.5, 2.25, 3.0])), axis=1)
    # Radial jitter N(0, 0.08²): P(|jitter| > 6σ) = 2e-9 per point, 8e-6 for 4000.
    assert np.all(distance_to_ring < 6 * 0.08)


def test_two_moons_and_spirals_support(toy_samples):
    # Undo the moons' scaling and check each point lies near one of the two unit half-circles.
    # The distance to the curve is at most |jitter|, with |jitter|²/σ² ~ χ²₂ (σ = 0.1): the
    # bound 6√2 σ is exceeded with probability e^-36 per point (likewise for the spirals).
    p = (toy_samples["two_moons"] + np.array([1.0, 0.5])) / 2
    upper = np.abs(np.linalg.norm(p, axis=1) - 1)
    lower = np.abs(np.linalg.norm(p - np.array([1.0, 0.5]), axis=1) - 1)
    assert np.all(np.minimum(upper, lower) < 6 * 0.1 * math.sqrt(2))
    radius = np.linalg.norm(toy_samples["two_spirals"], axis=1)
    assert np.all(radius < math.pi + 6 * 0.1 * math.sqrt(2))


def test_unknown_toy_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"valid names.*two_moons") as info:
        sample_toy("moons", jax.random.PRNGKey(0), 10)
    assert "checkerboard" in str(info.value)


def test_digits():
    digits = load_digits()
    assert digits.images.shape == (1797, 8, 8, 1) and digits.images.dtype == np.uint8
    assert digits.images.max() == DIGITS_NUM_LEVELS - 1 == 16
    assert digits.labels.shape == (1797,) and set(np.unique(digits.labels)) == set(range(10))
    np.testing.assert_array_equal(load_dataset("digits", "train").images, digits.images)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_on_synthetic_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    loaded = load_mnist_family("mnist", "test", tmp_path)  # finds tmp_path/mnist/
    np.testing.assert_array_equal(loaded.images, images[..., None])
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.labels.dtype == np.int32
    # A labels file where images belong is refused with a clear message.
    write_idx(folder / "train-images-idx3-ubyte.gz", labels)
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(ValueError, match="3 dims"):
        load_mnist_family("mnist", "train", folder)


def test_binarized_loader_on_synthetic_file(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        split: rng.integers(0, 2, size=(4, 784), dtype=np.uint8)
        for split in data._SPLITS["binarized_mnist"]
    }
    np.savez(tmp_path / "binarized_mnist.npz", **arrays)
    valid = load_binarized_mnist("valid", tmp_path)
    assert valid.labels is None
    np.testing.assert_array_equal(valid.images, arrays["valid"].reshape(4, 28, 28, 1))
    with pytest.raises(ValueError, match="splits"):
        load_binarized_mnist("validation", tmp_path)


@needs_shared_fashion_mnist
def test_shared_fashion_mnist():
    train = load_mnist_family("fashion_mnist", "train", SHARED_DATA)
    assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.uint8
    assert train.labels.shape == (60000,) and set(np.unique(train.labels)) == set(range(10))
    assert train.images.max() == 255
    test = load_dataset("fashion_mnist", "test", data_dir=SHARED_DATA)
    assert test.images.shape == (10000, 28, 28, 1)


@needs_shared_data
def test_shared_binarized_mnist():
    valid = load_dataset("binarized_mnist", "valid", data_dir=SHARED_DATA)
    assert valid.images.shape == (10000, 28, 28, 1) and valid.images.dtype == np.uint8
    assert set(np.unique(valid.images)) == {0, 1}
    assert load_binarized_mnist("train", SHARED_DATA).images.shape == (50000, 28, 28, 1)


@needs_shared_data
def test_default_places_find_the_shared_copy(monkeypatch):
    monkeypatch.delenv("NFLOWS_JAX_DATA", raising=False)
    monkeypatch.setattr(data, "_load_from_tfds", fail_like_offline_tfds)
    test = load_dataset("binarized_mnist", "test")
    assert test.images.shape == (10000, 28, 28, 1)


def test_default_data_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("NFLOWS_JAX_DATA", str(tmp_path))
    dirs = data.default_data_dirs()
    assert dirs[0] == tmp_path
    assert Path.home() / ".cache" / "nflows_jax" in dirs
    assert Path(data.__file__).resolve().parents[2] / "shared" / "data" in dirs


def fail_like_offline_tfds(name, split, tfds_dir, download):
    raise ConnectionError(f"Failed to download {name}: no network")


def test_missing_data_error_names_every_place(monkeypatch, tmp_path):
    empty_a, empty_b = tmp_path / "a", tmp_path / "b"
    empty_a.mkdir()
    monkeypatch.setattr(data, "_load_from_tfds", fail_like_offline_tfds)
    with pytest.raises(FileNotFoundError, match="'fashion_mnist'") as info:
        load_dataset("fashion_mnist", "train", data_dir=[empty_a, empty_b], download=True)
    message = str(info.value)
    for place in [
        empty_a / "fashion_mnist" / "train-images-idx3-ubyte.gz",
        empty_a / "train-images-idx3-ubyte.gz",
        empty_b / "fashion_mnist" / "train-images-idx3-ubyte.gz",
        empty_b / "train-images-idx3-ubyte.gz",
        empty_a / "tensorflow_datasets" / "fashion_mnist",
    ]:
        assert str(place) in message
    assert "tensorflow-datasets" in message and "no network" in message

    # With no data_dir, the default places are the ones searched and named.
    monkeypatch.setattr(data, "default_data_dirs", lambda: [empty_a, empty_b])
    with pytest.raises(FileNotFoundError, match="'binarized_mnist'") as info:
        load_dataset("binarized_mnist", "valid", download=True)
    for place in [empty_a / "binarized_mnist.npz", empty_b / "binarized_mnist.npz"]:
        assert str(place) in str(info.value)
    assert "'validation'" in str(info.value)  # the tfds split name that was tried


def test_a_missing_dataset_fails_at_once_offline(monkeypatch, tmp_path):
    """Without ``download=True`` tensorflow-datasets is never called (it retried for minutes
    offline and wrote ``~/tensorflow_datasets``) and nothing is written anywhere."""
    calls = []
    monkeypatch.setattr(data, "_load_from_tfds", lambda *args: calls.append(args))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NFLOWS_JAX_DATA", raising=False)
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        load_dataset("mnist", "train", data_dir=missing)
    assert str(missing / "tensorflow_datasets") in str(info.value)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("cifar10", "test", data_dir=missing)
    assert calls == []
    assert not missing.exists() and list(home.iterdir()) == []


def test_tfds_reads_and_writes_only_under_the_data_dir(monkeypatch, tmp_path, capfd):
    calls = []

    def fake_tfds(name, split, tfds_dir, download):
        calls.append((name, split, tfds_dir, download))
        return ImageDataset(np.zeros((3, 32, 32, 3), np.uint8), np.arange(3, dtype=np.int32))

    monkeypatch.setattr(data, "_load_from_tfds", fake_tfds)
    result = load_dataset("cifar10", "train", data_dir=tmp_path, download=True)
    assert calls == [("cifar10", "train", tmp_path / "tensorflow_datasets", True)]
    assert result.images.shape == (3, 32, 32, 3)
    assert str(tmp_path / "tensorflow_datasets") in capfd.readouterr().err, "a download is said"
    # A copy prepared there before is read without download=True (and without the network).
    (tmp_path / "tensorflow_datasets" / "cifar10").mkdir(parents=True)
    load_dataset("cifar10", "test", data_dir=tmp_path)
    assert calls[-1] == ("cifar10", "test", tmp_path / "tensorflow_datasets", False)
    assert capfd.readouterr().err == ""


def test_tfds_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("NFLOWS_JAX_DATA", raising=False)
    assert (
        data.tfds_data_dir([tmp_path / "a", tmp_path / "b"])
        == tmp_path / "a" / "tensorflow_datasets"
    )
    default = Path.home() / ".cache" / "nflows_jax" / "tensorflow_datasets"
    assert data.tfds_data_dir() == default
    monkeypatch.setenv("NFLOWS_JAX_DATA", str(tmp_path))
    assert data.tfds_data_dir() == tmp_path / "tensorflow_datasets"


def test_local_loaders_never_fall_back(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"binarized_mnist\.npz"):
        load_binarized_mnist("test", tmp_path)
    with pytest.raises(ValueError, match="valid names"):
        load_dataset("svhn", "train", tmp_path)


def test_tfds_conversion_without_tensorflow(monkeypatch, tmp_path):
    """The real ``_load_from_tfds`` with ``tfds.data_source`` replaced: split names and NHWC."""
    import tensorflow_datasets as tfds

    requested = {}

    def fake_data_source(name, *, split, data_dir, download, builder_kwargs):
        requested.update(name=name, split=split, data_dir=data_dir, download=download)
        requested.update(builder_kwargs)
        return [{"image": np.full((28, 28, 1), i, np.uint8)} for i in range(4)]

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    monkeypatch.setattr(tfds, "data_source", fake_data_source)
    result = data._load_from_tfds("binarized_mnist", "valid", tmp_path, download=False)
    assert requested == {
        "name": "binarized_mnist",
        "split": "validation",
        "data_dir": str(tmp_path),
        "download": False,
        "file_format": "array_record",
    }
    assert result.images.shape == (4, 28, 28, 1) and result.images.dtype == np.uint8
    assert result.labels is None
    np.testing.assert_array_equal(result.images[:, 0, 0, 0], np.arange(4))


def test_batches_deterministic_and_permutation_per_epoch():
    x = np.arange(10, dtype=np.float32)
    y = -np.arange(10)
    batch_fn = batches((x, y), batch_size=3, seed=7)
    assert batch_fn.steps_per_epoch == 3  # drop_last: 10 // 3
    epoch0 = np.concatenate([batch_fn(s)[0] for s in range(3)])
    epoch1 = np.concatenate([batch_fn(s)[0] for s in range(3, 6)])
    for epoch in (epoch0, epoch1):
        assert len(np.unique(epoch)) == 9  # 9 distinct examples, one left out per epoch
    assert not np.array_equal(epoch0, epoch1), "each epoch has its own order"
    # Any step is computable directly, by a fresh batch_fn, in any order.
    fresh = batches((x, y), batch_size=3, seed=7)
    for step in (5, 0, 4, 100, 4):
        np.testing.assert_array_equal(fresh(step)[0], batch_fn(step)[0])
    xb, yb = batch_fn(4)
    np.testing.assert_array_equal(yb, -xb.astype(int))  # pytree leaves stay aligned
    assert not np.array_equal(batches(x, 3, seed=8)(0), batch_fn(0)[0])


def test_batches_order_is_pinned():
    """Golden indices: exact resumes of old checkpoints depend on this order never changing
    (``numpy.random.default_rng([seed, epoch]).permutation(N)``, sliced, drop-last)."""
    small = batches(np.zeros(10), batch_size=3, seed=0)
    assert [small.indices(step).tolist() for step in range(4)] == [
        [4, 6, 2], [7, 3, 5], [9, 0, 8],  # epoch 0 (example 1 dropped)
        [9, 1, 3],  # epoch 1 starts
    ]  # fmt: skip
    large = batches(np.zeros(1000), batch_size=4, seed=123)
    assert [large.indices(step).tolist() for step in (0, 1, 250, 251)] == [
        [775, 709, 459, 716], [371, 941, 446, 539], [941, 761, 897, 35], [0, 674, 34, 730]
    ]  # fmt: skip


def test_batches_work_on_device_arrays():
    x = jnp.arange(12.0).reshape(6, 2)
    batch = batches(x, batch_size=2, seed=0)(1)
    assert isinstance(batch, jax.Array) and batch.shape == (2, 2)


@pytest.mark.parametrize("batch_size", [0, 11, 2.5])
def test_batches_validate_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        batches(np.zeros((10, 2)), batch_size=batch_size, seed=0)


def test_batches_validate_leading_axes():
    with pytest.raises(ValueError, match="same leading axis"):
        batches((np.zeros(10), np.zeros(9)), batch_size=2, seed=0)
