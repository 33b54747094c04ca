"""The data layer on the real files of shared/data (no mocks on the main path).

Known values come from the datasets themselves: the official label sequences
that every MNIST and CIFAR-10 user sees first, and the README of shared/data.
"""

import gzip
import hashlib
import http.server
import os
import pickle
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sweep import data
from sweep.data import DataError

SHARED = Path(os.environ["SWEEP_DATA_DIR"])
MNIST_NPZ = SHARED / "mnist_subset.npz"
LOSSLESS_NPZ = SHARED / "cifar10_lossless_samples.npz"

# float32 holds k/255 and a 3-term weighted sum to about 1e-7
FLOAT32_TOL = 1e-6


def _npz(path: Path, key: str) -> np.ndarray:
    with np.load(path) as archive:
        return archive[key]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Only `tmp_path/data` is searched; the cache is empty; no network."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(data.NO_DOWNLOAD_ENV, "1")
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


# ---------------------------------------------------------------- real datasets


def test_mnist_starts_with_the_official_digits():
    # the official training set begins 5 0 4 1 9 2 1 3 1 4, the test set
    # 7 2 1 0 4 1 4 9 5 9: known to everyone who has printed MNIST's labels
    assert data.labels("mnist", "train", 10).tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert data.labels("mnist", "test", 10).tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    x = data.images("mnist", "train", 10)
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32
    # raw MNIST is 0 background to 255 ink, so /255 gives exactly 0 and 1
    assert x.min().item() == 0.0 and x.max().item() == 1.0


def test_cifar10_starts_with_the_official_images():
    # batch 1 starts frog truck truck deer car car bird horse ship cat; the test
    # batch starts cat ship ship plane frog frog car frog cat car
    assert data.labels("cifar10", "train", 10).tolist() == [
        6,
        9,
        9,
        4,
        1,
        1,
        2,
        7,
        8,
        3,
    ]
    assert data.labels("cifar10", "test", 10).tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    x = data.images("cifar10", "train", 10)
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
    # small n is served pixel-exact from the lossless archive
    raw = _npz(LOSSLESS_NPZ, "x_train")[:10]
    assert torch.equal(x, torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255)


def test_cifar10_past_200_comes_class_interleaved_from_the_jpeg_subset():
    x = data.images("cifar10", "train", 300)
    y = data.labels("cifar10", "train", 300)
    # interleaved by within-class rank: classes 0..9, then 0..9 again, ...
    assert y.tolist() == [i % 10 for i in range(300)]
    # slot 6 is the first frog, official image 0: its JPEG copy is within the
    # README's worst per-image error (MAE 9.7 grey levels) of the lossless one
    exact = data.images("cifar10", "train", 1)[0]
    assert (x[6] - exact).abs().mean().item() <= 9.7 / 255


def test_movie_frames_and_mean_preserving_resize():
    frames = data.images("movie", "train", 382)
    assert frames.shape == (382, 1, 128, 128)
    assert data.load_split("movie", "train").shape == (382, 128, 128, 1)
    small = data.images("movie", "train", 382, image_size=32)
    assert small.shape == (382, 1, 32, 32)
    # an antialiased 4x downsampling averages 4x4 blocks with weights that sum
    # to one, so each frame's mean brightness survives; only the renormalised
    # border rows differ (measured 1.8e-4, a grey level is 3.9e-3)
    mean_tol = 1e-3
    gap = (frames.mean(dim=(1, 2, 3)) - small.mean(dim=(1, 2, 3))).abs().max()
    assert gap.item() < mean_tol
    with pytest.raises(DataError, match="no test split"):
        data.images("movie", "test", 1)


def test_grey_is_the_601_luma_of_each_pixel():
    grey = data.images("cifar10", "train", 2, grey=True)
    assert grey.shape == (2, 1, 32, 32)
    # by hand: image 1, row 5, column 7 of the raw lossless pixels
    r, g, b = (int(v) for v in _npz(LOSSLESS_NPZ, "x_train")[1, 5, 7])
    by_hand = (0.299 * r + 0.587 * g + 0.114 * b) / 255
    assert grey[1, 0, 5, 7].item() == pytest.approx(by_hand, abs=FLOAT32_TOL)


def test_seeded_subsets_are_reproducible_distinct_and_real():
    a = data.images("mnist", "train", 50, subset_seed=3)
    assert torch.equal(a, data.images("mnist", "train", 50, subset_seed=3))
    assert not torch.equal(a, data.images("mnist", "train", 50, subset_seed=4))
    # every image is a row of the 5,000-image pool, and no row comes twice
    pool = data.load_split("mnist", "train").reshape(5000, -1)
    row_of = {row.tobytes(): i for i, row in enumerate(pool)}
    picked = (a.reshape(50, -1) * 255).round().to(torch.uint8).numpy()
    rows = [row_of[p.tobytes()] for p in picked]
    assert len(set(rows)) == 50 and all(0 <= i < 5000 for i in rows)
    # and the labels are those of the same rows
    y = data.labels("mnist", "train", 50, subset_seed=3)
    assert y.tolist() == _npz(MNIST_NPZ, "y_train")[rows].tolist()


def test_checksums_are_the_readme_values():
    # the SHA-256 published in shared/data/README.md for mnist_subset.npz
    readme = "d6e0a73d520154aeac0a077c2385aec719939a3faac19c5810bcb7b50184733b"
    assert data.checksums("mnist") == {"mnist_subset.npz": readme}


# ---------------------------------------------------------------- noise


def test_noise_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = data.noise("gaussian", 4, (1, 7, 7), seed=5)
    assert a.shape == (4, 1, 7, 7) and a.dtype == torch.float32
    assert torch.equal(a, data.noise("gaussian", 4, (1, 7, 7), seed=5))
    assert not torch.equal(a, data.noise("gaussian", 4, (1, 7, 7), seed=6))
    assert torch.equal(torch.get_rng_state(), state)


def test_gaussian_noise_has_its_mean_and_std():
    x = data.noise("gaussian", 2000, (500,), mean=0.5, std=2.0, seed=0).double()
    n = x.numel()
    # 5 standard errors: std/sqrt(n) for the mean, std/sqrt(2n) for the std
    # (a false alarm has probability about 6e-7)
    assert abs(x.mean().item() - 0.5) < 5 * 2.0 / n**0.5
    assert abs(x.std().item() - 2.0) < 5 * 2.0 / (2 * n) ** 0.5


def test_uniform_noise_stays_in_its_interval():
    x = data.noise("uniform", 1000, (100,), low=-0.25, high=0.75, seed=1)
    assert x.min().item() >= -0.25 and x.max().item() <= 0.75
    # mean (low + high) / 2 = 0.25 within 5 standard errors (width / sqrt(12 n))
    assert abs(x.double().mean().item() - 0.25) < 5 * 1.0 / (12 * x.numel()) ** 0.5
    with pytest.raises(DataError, match="unknown noise 'pink'"):
        data.noise("pink", 1, (1,))


# ---------------------------------------------------------------- bad input


def test_unknown_names_and_too_many_images():
    with pytest.raises(DataError, match="unknown dataset 'svhn'; choose one of"):
        data.images("svhn", "train", 1)
    with pytest.raises(DataError, match="unknown split 'val'"):
        data.images("mnist", "val", 1)
    # the npz holds 5,000 training digits: the message names both numbers
    with pytest.raises(DataError, match="n=5001 .* holds only 5000"):
        data.images("mnist", "train", 5001)


def test_named_directory_that_does_not_exist(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{missing} .*does not exist"):
        data.data_dirs(missing)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(missing))
    with pytest.raises(DataError, match=data.DATA_DIR_ENV):
        data.images("mnist", "train", 1)


def test_search_order_is_argument_environment_cache(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.setenv(data.DATA_DIR_ENV, str(SHARED))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = [(tmp_path / "a").resolve(), SHARED.resolve()]
    assert data.data_dirs(tmp_path / "a") == [
        *expected,
        tmp_path / "xdg/attractor-sweep",
    ]


def test_truncated_archive_is_named(offline):
    half = MNIST_NPZ.read_bytes()[: MNIST_NPZ.stat().st_size // 2]
    (offline / MNIST_NPZ.name).write_bytes(half)
    with pytest.raises(DataError, match=f"{offline / MNIST_NPZ.name} .*truncated"):
        data.images("mnist", "train", 1, data_dir=offline)
    # the reader itself, past the size check, also refuses the half file
    with pytest.raises(DataError, match="truncated or corrupt"):
        data._read_npz(offline / MNIST_NPZ.name, ("x_train",))


def test_archive_without_its_keys_is_named(tmp_path):
    np.savez(tmp_path / "other.npz", frames=np.zeros(3))
    with pytest.raises(DataError, match="lacks the key"):
        data._read_npz(tmp_path / "other.npz", ("x_train",))


def test_flipped_byte_fails_the_checksum(offline):
    raw = bytearray(MNIST_NPZ.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (offline / MNIST_NPZ.name).write_bytes(bytes(raw))
    with pytest.raises(DataError, match="mnist_subset.npz fails its SHA-256"):
        data.images("mnist", "train", 1, data_dir=offline)


def test_empty_directory_says_what_to_put_where(offline):
    with pytest.raises(DataError) as err:
        data.images("mnist", "train", 1, data_dir=offline)
    message = str(err.value)
    assert "\n" not in message and "downloading is disabled" in message
    for needed in ("mnist_subset.npz", "train-images-idx3-ubyte", str(offline)):
        assert needed in message
    assert "--data-dir DIR" in message and data.DATA_DIR_ENV in message


def test_failed_download_is_reported_not_hidden(offline, monkeypatch):
    # port 9 (discard) on loopback refuses at once; nothing leaves the machine
    monkeypatch.delenv(data.NO_DOWNLOAD_ENV)
    monkeypatch.setitem(data.DOWNLOAD_URLS, "mnist", ("http://127.0.0.1:9/",))
    with pytest.raises(DataError, match="could not download train-images.*--data-dir"):
        data.images("mnist", "train", 1, data_dir=offline)
    cache = offline.parent / "cache/attractor-sweep"
    assert list(cache.iterdir()) == []  # no partial file left behind


# ---------------------------------------------------------------- official formats


def _write_idx(path: Path, array: np.ndarray) -> None:
    # IDX: two zero bytes, type 0x08 (uint8), ndim, big-endian uint32 dims, data
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _mnist_idx_dir(d: Path) -> None:
    """The first 50 real train and test digits as IDX files, gz and plain."""
    for split, suffix in (("train", ".gz"), ("test", "")):
        stem_x, stem_y = data.MNIST_IDX[split]
        _write_idx(d / f"{stem_x}{suffix}", _npz(MNIST_NPZ, f"x_{split}")[:50])
        _write_idx(d / f"{stem_y}{suffix}", _npz(MNIST_NPZ, f"y_{split}")[:50])


def test_idx_files_read_back_exactly(offline):
    _mnist_idx_dir(offline)
    for split in ("train", "test"):
        x = data.images("mnist", split, 50, data_dir=offline)
        expected = _npz(MNIST_NPZ, f"x_{split}")[:50, None] / 255
        assert torch.equal(x, torch.from_numpy(expected).float())
        y = data.labels("mnist", split, 50, data_dir=offline)
        assert y.tolist() == _npz(MNIST_NPZ, f"y_{split}")[:50].tolist()
    name = "train-images-idx3-ubyte.gz"
    digest = hashlib.sha256((offline / name).read_bytes()).hexdigest()
    assert data.checksums("mnist", offline)[name] == digest


def test_truncated_idx_file_is_named(offline):
    _mnist_idx_dir(offline)
    path = offline / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte holds .*truncated"):
        data.images("mnist", "test", 1, data_dir=offline)


def _cifar_batches_dir(d: Path) -> Path:
    """The 200 + 20 lossless images as python batches of the official format."""
    batches = d / data.CIFAR_DIR
    batches.mkdir()
    x, y = _npz(LOSSLESS_NPZ, "x_train"), _npz(LOSSLESS_NPZ, "y_train")
    xt, yt = _npz(LOSSLESS_NPZ, "x_test"), _npz(LOSSLESS_NPZ, "y_test")
    parts = [
        (f"data_batch_{i + 1}", x[40 * i : 40 * (i + 1)], y[40 * i : 40 * (i + 1)])
        for i in range(5)
    ] + [("test_batch", xt, yt)]
    for name, images, labels in parts:
        # rows of 1024 R, 1024 G, 1024 B, as in the official batches
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
        batch = {b"data": rows, b"labels": labels.tolist()}
        (batches / name).write_bytes(pickle.dumps(batch, protocol=2))
    return batches


def test_cifar_python_batches_read_back_exactly(offline):
    _cifar_batches_dir(offline)
    assert np.array_equal(
        data.load_split("cifar10", "train", offline), _npz(LOSSLESS_NPZ, "x_train")
    )
    test = data.images("cifar10", "test", 20, data_dir=offline)
    expected = _npz(LOSSLESS_NPZ, "x_test").transpose(0, 3, 1, 2) / 255
    assert torch.equal(test, torch.from_numpy(expected).float())
    assert data.labels("cifar10", "test", 10, data_dir=offline).tolist() == [
        3, 8, 8, 0, 6, 6, 1, 6, 3, 1
    ]  # fmt: skip


def test_cifar_pickle_with_foreign_globals_is_refused(offline):
    batches = _cifar_batches_dir(offline)
    # a pickle that would call os.system on load must never get that far
    planted = b"cos\nsystem\n(S'echo pwned'\ntR."
    (batches / "test_batch").write_bytes(planted)
    with pytest.raises(DataError, match="refusing global os.system"):
        data.images("cifar10", "test", 1, data_dir=offline)


def test_cifar_tarball_is_read_only_when_official(offline):
    batches = _cifar_batches_dir(offline.parent)
    with tarfile.open(offline / data.CIFAR_TARBALL, "w:gz") as tar:
        tar.add(batches, arcname=data.CIFAR_DIR)
    # a home-made tarball has the wrong size/hash, so its pickles stay unread
    with pytest.raises(DataError, match="cifar-10-python.tar.gz is .* bytes, not"):
        data.images("cifar10", "train", 1, data_dir=offline)


# ---------------------------------------------------------------- downloading


@pytest.fixture
def loopback_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; stopped afterwards."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):  # keep pytest's output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_verifies_and_renames_into_place(
    tmp_path, monkeypatch, loopback_server
):
    served, url = loopback_server
    _mnist_idx_dir(served)
    for path in list(served.iterdir()):  # the official downloads are all gz
        if path.suffix != ".gz":
            with open(path, "rb") as f, gzip.open(f"{path}.gz", "wb") as g:
                shutil.copyfileobj(f, g)
    monkeypatch.setitem(data.DOWNLOAD_URLS, "mnist", (url,))
    cache = tmp_path / "cache"

    # the served files are not the published ones: rejected, nothing kept
    with pytest.raises(DataError, match="is not the published"):
        data.ensure_downloaded("mnist", cache)
    assert list(cache.iterdir()) == []

    # with their own hashes registered they are accepted and readable
    for path in served.glob("*.gz"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        monkeypatch.setitem(data.OFFICIAL, path.name, (path.stat().st_size, digest))
    assert data.ensure_downloaded("mnist", cache) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(data._DOWNLOADS["mnist"])
    y = data.labels("mnist", "train", 10, data_dir=cache)
    assert y.tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_movie_has_no_download(tmp_path):
    with pytest.raises(DataError, match="no official download"):
        data.ensure_downloaded("movie", tmp_path)
