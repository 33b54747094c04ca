"""Real images as float tensors in [0, 1], found on disk or downloaded; never faked.

Where pixels come from, per directory of `data_dirs()` (first directory that has any
wins), in this order of preference:

1. The verified `.npz` archives of shared/data (see its README): pixel-exact MNIST
   (the first 500 training images of each digit, the full test set), CIFAR-10
   (pixel-exact training images 0-199 and test images 0-19, plus a JPEG-decoded
   2,000 train / 10,000 test) and the Steamboat Willie frames.
2. The official files: MNIST's IDX files (gz or not) and CIFAR-10's python
   version (the tarball, or an extracted `cifar-10-batches-py/`).
3. Nothing anywhere: the official files are downloaded into the per-user cache.

Missing data is a `DataError` that says which files to put where. Loaded arrays
and file hashes are cached in-process, so many trials in one worker read once.

Environment: $SWEEP_DATA_DIR names a data directory (after --data-dir);
$SWEEP_NO_DOWNLOAD=1 forbids downloads (the error then says so); the cache is
$XDG_CACHE_HOME/attractor-sweep, else ~/.cache/attractor-sweep.

Below this module: `sweep.datafiles` locates, verifies and downloads the files,
`sweep.dataformats` parses them; their constants are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sweep import datafiles, dataformats
from sweep.datafiles import _DOWNLOADS as _DOWNLOADS  # tests/test_data.py reads it
from sweep.datafiles import (
    CIFAR_BATCHES,
    CIFAR_DIR,
    CIFAR_TARBALL,
    DATA_DIR_ENV,
    DOWNLOAD_TIMEOUT_S,
    DOWNLOAD_URLS,
    MNIST_IDX,
    NO_DOWNLOAD_ENV,
    NPZ_FILES,
    OFFICIAL,
    SHARED_NPZ,
    DataError,
)
from sweep.dataformats import _read_npz as _read_npz  # tests/test_data.py calls it

# the user-facing names, plus the file constants of `sweep.datafiles`; the dicts
# are the same objects there, so patching an entry here patches it for the
# readers too (rebinding a name here would not: patch sweep.datafiles for that)
__all__ = [
    "DataError", "DATASETS", "SPLITS", "NOISE_KINDS", "NATIVE_SHAPE", "LUMA_601",
    "data_dirs", "load_split", "images", "labels", "noise", "checksums",
    "ensure_downloaded", "DATA_DIR_ENV", "NO_DOWNLOAD_ENV", "DOWNLOAD_TIMEOUT_S",
    "SHARED_NPZ", "NPZ_FILES", "OFFICIAL", "MNIST_IDX", "CIFAR_TARBALL",
    "CIFAR_DIR", "CIFAR_BATCHES", "DOWNLOAD_URLS",
]  # fmt: skip

DATASETS = ("mnist", "cifar10", "movie")
SPLITS = ("train", "test")
NOISE_KINDS = ("gaussian", "uniform")
NATIVE_SHAPE = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "movie": (1, 128, 128)}

# ITU-R BT.601 luma weights for (R, G, B): the usual RGB -> grey conversion
LUMA_601 = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------- public API


def image_shape(cfg) -> tuple[int, int, int]:
    """(c, h, w) of a TrialConfig's images, without reading any data."""
    c, h, w = NATIVE_SHAPE[cfg.dataset]
    if cfg.image_size:
        h = w = cfg.image_size
    return (1 if cfg.grey else c, h, w)


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched, in order: `data_dir`, $SWEEP_DATA_DIR, the user cache.

    A directory that is named (argument or environment) but missing is an error,
    not a silent skip. The cache is $XDG_CACHE_HOME/attractor-sweep, else
    ~/.cache/attractor-sweep, and need not exist yet.
    """
    return list(dict.fromkeys([*datafiles.named_dirs(data_dir), datafiles.cache_dir()]))


def load_split(
    dataset: str, split: str, data_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """Raw uint8 images (N, H, W, C) of a split: all that the data directory holds.

    The order is the official one wherever the source keeps it: MNIST (the npz
    keeps the official relative order of its 5,000), the official CIFAR-10
    files, and the movie (its 382 frames in playback order; it has no test
    split). The JPEG CIFAR-10 subset lost the official interleaving, so its
    images come class-interleaved: rank 0 of each class in class order, then
    rank 1, and so on. The array is read-only: it is shared by the cache.
    """
    return _pools(dataset, split, data_dir)[-1].x


def images(
    dataset: str,
    split: str,
    n: int,
    *,
    subset_seed: int | None = None,
    image_size: int | None = None,
    grey: bool = False,
    data_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """n images as float32 (n, c, h, w) in [0, 1]: raw pixels / 255.

    Without `subset_seed`: the first n of the split. With it: n drawn without
    replacement by `np.random.default_rng(subset_seed).permutation`, in the
    permutation's order (not sorted), from the largest pool at hand (so record
    `checksums()`: another source gives another subset).

    CIFAR-10 from the npz archives: the pixel-exact official images 0-199
    (train) or 0-19 (test) serve n up to that many without a seed; larger n
    and any seeded subset come from the JPEG-decoded subset (real images,
    about 6 grey levels of compression error, class-interleaved order, see
    `load_split`), so the first n then are not CIFAR-10's first n. MNIST's npz
    equals the official first n for n <= 4502 (where a class passes 500).

    `image_size` resizes to a square by antialiased bilinear interpolation;
    `grey` maps RGB to one channel with the ITU-R 601 luma weights.
    """
    _check_size(image_size)
    pool, index = _select(dataset, split, n, subset_seed, data_dir)

    # uint8 (n, h, w, c) -> float (n, c, h, w) in [0, 1]
    x = torch.from_numpy(pool.x[index]).permute(0, 3, 1, 2).float().div_(255)
    if grey and x.shape[1] == 3:
        luma = torch.tensor(LUMA_601).view(1, 3, 1, 1)
        x = (x * luma).sum(dim=1, keepdim=True)
    if image_size is not None and image_size != x.shape[-1]:
        # antialias so downsampling averages instead of aliasing; the filter's
        # weights are convex, the clamp only removes float round-off past [0, 1]
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True
        ).clamp_(0.0, 1.0)
    return x.contiguous()


def labels(
    dataset: str,
    split: str,
    n: int,
    *,
    subset_seed: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """int64 (n,) class labels of exactly the images `images` returns (movie: frame
    index in the cycle)."""
    pool, index = _select(dataset, split, n, subset_seed, data_dir)
    return pool.y[index]


def noise(
    kind: str,
    n: int,
    shape: tuple[int, ...],
    *,
    mean: float = 0.0,
    std: float = 1.0,
    low: float = 0.0,
    high: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """float32 (n, *shape) of N(mean, std^2) ("gaussian") or U[low, high] ("uniform").

    Drawn from a private `torch.Generator` seeded with `seed`, so it neither
    reads nor advances the global RNG.
    """
    if kind not in NOISE_KINDS:
        raise DataError(
            f"unknown noise {kind!r}; choose one of {', '.join(NOISE_KINDS)}"
        )
    if n < 0 or std < 0 or low > high:
        raise DataError(
            f"bad noise parameters n={n}, std={std}, low={low}, high={high}; "
            "need n >= 0, std >= 0 and low <= high"
        )
    generator = torch.Generator().manual_seed(seed)
    size = (n, *shape)
    if kind == "gaussian":
        return torch.randn(size, generator=generator).mul_(std).add_(mean)
    # torch.rand is in [0, 1); the clamp guards round-off at high
    u = torch.rand(size, generator=generator)
    return u.mul_(high - low).add_(low).clamp_(low, high)


def checksums(
    dataset: str, data_dir: str | os.PathLike | None = None
) -> dict[str, str]:
    """{file name: SHA-256 hex} of the files this dataset is read from, for provenance.

    Names are relative to the directory that holds them.
    """
    _check_dataset(dataset)
    found = _find(dataset, data_dir)
    return {
        p.relative_to(found.root).as_posix(): datafiles.sha256(p) for p in found.files
    }


def ensure_downloaded(dataset: str, cache_dir: Path | None = None) -> Path:
    """Download the official files of `dataset` into the cache; return the cache.

    Each file is streamed into a temporary file beside its target, checked
    against its published SHA-256, then renamed into place, so a half-finished
    or wrong download never sits under the real name. Files already there are
    verified, not fetched again. $SWEEP_NO_DOWNLOAD=1 forbids the network.
    """
    _check_dataset(dataset)
    try:
        root = Path(cache_dir) if cache_dir else datafiles.cache_dir()
        return datafiles.fetch(dataset, root)
    except datafiles.FetchFailed as err:
        raise DataError(
            f"{err}; pass --data-dir DIR or set {DATA_DIR_ENV} to a directory "
            "holding the files"
        ) from None


# ---------------------------------------------------------------- selecting images


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise DataError(
            f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}"
        )


def _check_split(dataset: str, split: str) -> None:
    _check_dataset(dataset)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose train or test")
    if dataset == "movie" and split == "test":
        raise DataError(
            "the movie has no test split; use split='train' (its 382 frames) and "
            "noise() for starting points"
        )


def _check_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size={image_size!r} must be a positive integer or None")


def _find(dataset: str, data_dir: str | os.PathLike | None) -> datafiles.Found:
    """The files of `dataset` in the first of `data_dirs` with any; else downloaded."""
    named = datafiles.named_dirs(data_dir)
    return datafiles.find(dataset, data_dirs(data_dir), named)


def _pools(
    dataset: str, split: str, data_dir: str | os.PathLike | None
) -> tuple[dataformats.Pool, ...]:
    """The image pools of a split, smallest (pixel-exact) first, largest last."""
    _check_split(dataset, split)
    found = _find(dataset, data_dir)
    stamps = tuple(datafiles.stamp(p) for p in found.files)
    return dataformats.read_pools(found, split, stamps)


def _select(
    dataset: str,
    split: str,
    n: int,
    subset_seed: int | None,
    data_dir: str | os.PathLike | None,
) -> tuple[dataformats.Pool, np.ndarray]:
    """The pool that serves n images, and the indices of those images in it."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise DataError(f"n={n!r} must be a non-negative integer")
    pools = _pools(dataset, split, data_dir)

    # the pixel-exact official-order pool when it suffices, else the largest
    pool = pools[0]
    if subset_seed is not None or not pool.exact or n > len(pool.x):
        pool = pools[-1]
    if n > len(pool.x):
        raise DataError(
            f"asked for n={n} {dataset} {split} images but {pool.origin} holds only "
            f"{len(pool.x)}; lower n, or pass --data-dir DIR with the official files"
        )
    if subset_seed is None:
        return pool, np.arange(n)
    return pool, np.random.default_rng(subset_seed).permutation(len(pool.x))[:n]
