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
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
import torch.nn.functional as F


class DataError(ValueError):
    """Data is missing, corrupt, or asked for in a way it cannot be served."""


DATASETS = ("mnist", "cifar10", "movie")
SPLITS = ("train", "test")
NOISE_KINDS = ("gaussian", "uniform")
NATIVE_SHAPE = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "movie": (1, 128, 128)}

DATA_DIR_ENV = "SWEEP_DATA_DIR"
NO_DOWNLOAD_ENV = "SWEEP_NO_DOWNLOAD"  # set to 1 to forbid network access
DOWNLOAD_TIMEOUT_S = 20.0

# ITU-R BT.601 luma weights for (R, G, B): the usual RGB -> grey conversion
LUMA_601 = (0.299, 0.587, 0.114)

# (size in bytes, SHA-256) of the archives in shared/data, from its README
SHARED_NPZ = {
    "mnist_subset.npz": (
        2_494_179,
        "d6e0a73d520154aeac0a077c2385aec719939a3faac19c5810bcb7b50184733b",
    ),
    "cifar10_subset.npz": (
        34_112_164,
        "33a46b81abcbafb7513f8c2ab4449806132018fb539c615bce33ce267cc15c84",
    ),
    "cifar10_lossless_samples.npz": (
        627_585,
        "904bba99c94ea10496b81305d22a65f0ab60864d236eec17a5f5342d40c15fc6",
    ),
    "steamboat_willie_frames.npz": (
        4_184_929,
        "99716f641272b8f80b318d20dde74e36d690f792b496570ad5c4d987f5273767",
    ),
}
# pixel-exact official-order archive first: it serves small n (see `images`)
NPZ_FILES = {
    "mnist": ("mnist_subset.npz",),
    "cifar10": ("cifar10_lossless_samples.npz", "cifar10_subset.npz"),
    "movie": ("steamboat_willie_frames.npz",),
}

# (size, SHA-256) of the official files: the published values as commonly
# recorded by dataset libraries (torchvision, Keras, TFDS)
OFFICIAL = {
    "train-images-idx3-ubyte.gz": (
        9_912_422,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train-labels-idx1-ubyte.gz": (
        28_881,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "t10k-images-idx3-ubyte.gz": (
        1_648_877,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "t10k-labels-idx1-ubyte.gz": (
        4_542,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
    "cifar-10-python.tar.gz": (
        170_498_071,
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
}
MNIST_IDX = {  # split -> (images, labels) file stems
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_TARBALL = "cifar-10-python.tar.gz"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
# mirrors tried in order (yann.lecun.com now often refuses; torchvision's S3 copy
# and TensorFlow's bucket hold the same bytes). Tests point these at loopback.
DOWNLOAD_URLS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
_DOWNLOADS = {
    "mnist": tuple(f"{stem}.gz" for pair in MNIST_IDX.values() for stem in pair),
    "cifar10": (CIFAR_TARBALL,),
}
_LOOKED_FOR = {
    "mnist": "mnist_subset.npz, or train-images-idx3-ubyte[.gz], "
    "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz]",
    "cifar10": "cifar10_lossless_samples.npz / cifar10_subset.npz, or "
    "cifar-10-python.tar.gz, or cifar-10-batches-py/",
    "movie": "steamboat_willie_frames.npz",
}
_REFETCH = "delete it and re-fetch it (shared/data/README.md or the official site)"


@dataclass(frozen=True)
class _Found:
    """The files one directory holds for a dataset, and their layout."""

    layout: str  # "npz", "idx", "cifar-tarball" or "cifar-batches"
    root: Path
    files: tuple[Path, ...]


@dataclass(frozen=True)
class _Pool:
    """Raw images of one split from one source, in the order they are served."""

    x: np.ndarray  # (N, H, W, C) uint8, read-only
    y: np.ndarray  # (N,) int64 class labels (movie: the frame's index)
    origin: str  # file names, for messages
    exact: bool  # pixel-exact and in official order, so its first n are official


# ---------------------------------------------------------------- public API


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched, in order: `data_dir`, $SWEEP_DATA_DIR, the user cache.

    A directory that is named (argument or environment) but missing is an error,
    not a silent skip. The cache is $XDG_CACHE_HOME/attractor-sweep, else
    ~/.cache/attractor-sweep, and need not exist yet.
    """
    return list(dict.fromkeys([*_named_dirs(data_dir), _cache_dir()]))


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
    return {p.relative_to(found.root).as_posix(): _sha256(p) for p in found.files}


def ensure_downloaded(dataset: str, cache_dir: Path | None = None) -> Path:
    """Download the official files of `dataset` into the cache; return the cache.

    Each file is streamed into a temporary file beside its target, checked
    against its published SHA-256, then renamed into place, so a half-finished
    or wrong download never sits under the real name. Files already there are
    verified, not fetched again. $SWEEP_NO_DOWNLOAD=1 forbids the network.
    """
    try:
        return _fetch(dataset, Path(cache_dir) if cache_dir else _cache_dir())
    except _FetchFailed as err:
        raise DataError(
            f"{err}; pass --data-dir DIR or set {DATA_DIR_ENV} to a directory "
            "holding the files"
        ) from None


# ---------------------------------------------------------------- locating files


class _FetchFailed(Exception):
    """A download could not happen; the text says why."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attractor-sweep"


def _named_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    named = []
    for origin, value in (
        ("--data-dir", data_dir),
        (DATA_DIR_ENV, os.environ.get(DATA_DIR_ENV) or None),
    ):
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DataError(
                f"data directory {path} (from {origin}) does not exist; create it "
                f"or point {origin} at the folder that holds the data files"
            )
        named.append(path.resolve())
    return named


def _find(dataset: str, data_dir: str | os.PathLike | None) -> _Found:
    """The first directory with files for `dataset`; else download into the cache."""
    named = _named_dirs(data_dir)
    dirs = data_dirs(data_dir)
    for d in dirs:
        # pickles of an extracted CIFAR-10 are read only from a directory the
        # user named, never from one that merely exists (the cache)
        found = _scan(dataset, d, trusted=d in named)
        if found:
            return found

    # nothing on disk: try the official download into the cache
    try:
        root = _fetch(dataset, _cache_dir())
    except _FetchFailed as err:
        raise DataError(
            f"no {dataset} data found: looked for {_LOOKED_FOR[dataset]} in "
            f"{', '.join(map(str, dirs))}; {err}; pass --data-dir DIR or set "
            f"{DATA_DIR_ENV} to a directory holding them"
        ) from None
    return _scan(dataset, root, trusted=False)


def _scan(dataset: str, d: Path, trusted: bool) -> _Found | None:
    if not d.is_dir():
        return None
    npz = tuple(d / name for name in NPZ_FILES[dataset] if (d / name).is_file())
    if npz:
        return _Found("npz", d, npz)
    if dataset == "mnist":
        idx = [_idx_file(d, stem) for pair in MNIST_IDX.values() for stem in pair]
        if all(idx):
            return _Found("idx", d, tuple(idx))
    if dataset == "cifar10":
        if (d / CIFAR_TARBALL).is_file():
            return _Found("cifar-tarball", d, (d / CIFAR_TARBALL,))
        names = (*CIFAR_BATCHES["train"], *CIFAR_BATCHES["test"])
        batches = tuple(d / CIFAR_DIR / name for name in names)
        if trusted and all(p.is_file() for p in batches):
            return _Found("cifar-batches", d, batches)
    return None


def _idx_file(d: Path, stem: str) -> Path | None:
    for path in (d / f"{stem}.gz", d / stem):
        if path.is_file():
            return path
    return None


def _fetch(dataset: str, cache: Path) -> Path:
    _check_dataset(dataset)
    if dataset == "movie":
        raise _FetchFailed(
            "the movie frames have no official download (they come from the "
            "authors' video, see shared/data/README.md)"
        )
    if os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0"):
        raise _FetchFailed(f"downloading is disabled ({NO_DOWNLOAD_ENV} is set)")
    cache.mkdir(parents=True, exist_ok=True)
    for name in _DOWNLOADS[dataset]:
        target = cache / name
        if target.is_file():
            _verify(target, *OFFICIAL[name])
        else:
            _download(name, DOWNLOAD_URLS[dataset], target)
    return cache


def _download(name: str, bases: tuple[str, ...], target: Path) -> None:
    sha = OFFICIAL[name][1]
    reasons = []
    for base in bases:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.")
        tmp = Path(tmp_name)
        try:
            # stream into the temporary file, hashing as it comes
            digest = hashlib.sha256()
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(
                    base + name, timeout=DOWNLOAD_TIMEOUT_S
                ) as response,
            ):
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha:
                raise DataError(
                    f"{base + name} sent a file whose SHA-256 is not the published "
                    f"{sha}; nothing was kept; fetch {name} by hand and pass "
                    f"--data-dir DIR"
                )
            os.replace(tmp, target)
            return
        except OSError as err:  # URLError, refused, timed out, disk full
            reasons.append(f"{base + name}: {' '.join(str(err).split())}")
        finally:
            tmp.unlink(missing_ok=True)
    raise _FetchFailed(f"could not download {name} ({'; '.join(reasons)})")


# ---------------------------------------------------------------- verifying files

_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _sha256(path: Path) -> str:
    """SHA-256 of a file, hashed once per (path, size, mtime) in this process."""
    key = _stamp(path)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _verify(path: Path, size: int, sha: str) -> None:
    # the size check names truncation plainly and costs no hashing
    actual = path.stat().st_size
    if actual != size:
        raise DataError(
            f"{path} is {actual} bytes, not the expected {size} (truncated or "
            f"altered); {_REFETCH}"
        )
    if _sha256(path) != sha:
        raise DataError(
            f"{path} fails its SHA-256 checksum (expected {sha}); it is corrupt "
            f"or altered: {_REFETCH}"
        )


# ---------------------------------------------------------------- reading pools


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


def _pools(
    dataset: str, split: str, data_dir: str | os.PathLike | None
) -> tuple[_Pool, ...]:
    """The image pools of a split, smallest (pixel-exact) first, largest last."""
    _check_split(dataset, split)
    found = _find(dataset, data_dir)
    return _read_pools(found, split, tuple(_stamp(p) for p in found.files))


def _select(
    dataset: str,
    split: str,
    n: int,
    subset_seed: int | None,
    data_dir: str | os.PathLike | None,
) -> tuple[_Pool, np.ndarray]:
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


@functools.lru_cache(maxsize=16)
def _read_pools(found: _Found, split: str, stamps: tuple) -> tuple[_Pool, ...]:
    # `stamps` (path, size, mtime) keys the cache, so a replaced file is re-read
    for path in found.files:
        if path.name in SHARED_NPZ:
            _verify(path, *SHARED_NPZ[path.name])
        elif path.name == CIFAR_TARBALL:
            # the tarball holds pickles: read it only if it is the official one
            _verify(path, *OFFICIAL[CIFAR_TARBALL])
    if found.layout == "npz":
        pools = [_npz_pool(path, split) for path in found.files]
    elif found.layout == "idx":
        pools = [_idx_pool(found, split)]
    else:
        pools = [_cifar_pool(found, split)]
    for pool in pools:
        pool.x.flags.writeable = False
    return tuple(pools)


def _npz_pool(path: Path, split: str) -> _Pool:
    if path.name == "steamboat_willie_frames.npz":
        frames = _read_npz(path, ("frames",))["frames"]  # (382, 128, 128)
        return _Pool(frames[..., None], np.arange(len(frames)), path.name, True)
    a = _read_npz(path, (f"x_{split}", f"y_{split}"))
    x, y = a[f"x_{split}"], a[f"y_{split}"].astype(np.int64)
    if x.ndim == 3:  # MNIST (N, 28, 28) -> (N, 28, 28, 1)
        x = x[..., None]
    if path.name == "cifar10_subset.npz":
        # grouped by class in the file; interleave by within-class rank so that
        # any first n is class-balanced (the official order is lost, see README)
        rank = _read_npz(path, (f"{split}_class_rank",))[f"{split}_class_rank"]
        order = np.lexsort((y, rank))
        return _Pool(x[order], y[order], path.name, False)
    return _Pool(x, y, path.name, True)


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Named arrays of an npz; a truncated, corrupt or incomplete one is a DataError."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            arrays = {k: archive[k] for k in keys if k not in missing}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(
            f"cannot read {path} ({type(err).__name__}); it is truncated or "
            f"corrupt: {_REFETCH}"
        ) from None
    if missing:
        raise DataError(f"{path} lacks the key(s) {', '.join(missing)}; {_REFETCH}")
    return arrays


def _idx_pool(found: _Found, split: str) -> _Pool:
    image_stem, label_stem = MNIST_IDX[split]
    paths = {p.name.removesuffix(".gz"): p for p in found.files}
    x = _read_idx(paths[image_stem], ndim=3)  # (N, 28, 28)
    y = _read_idx(paths[label_stem], ndim=1).astype(np.int64)
    if len(x) != len(y):
        raise DataError(
            f"{paths[image_stem]} has {len(x)} images but {paths[label_stem]} has "
            f"{len(y)} labels; {_REFETCH}"
        )
    return _Pool(x[..., None], y, paths[image_stem].name, True)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse LeCun's IDX format: 0, 0, type 0x08 (uint8), ndim, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"cannot read {path} ({type(err).__name__}); {_REFETCH}"
        ) from None
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"{path} is not an IDX file of {ndim}-d bytes; {_REFETCH}")
    dims = [int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4)]
    body = 4 + 4 * ndim
    if len(raw) - body != int(np.prod(dims)):
        raise DataError(
            f"{path} holds {len(raw) - body} data bytes but its header says "
            f"{int(np.prod(dims))} (truncated); {_REFETCH}"
        )
    return np.frombuffer(raw, np.uint8, offset=body).reshape(dims)


def _cifar_pool(found: _Found, split: str) -> _Pool:
    names = CIFAR_BATCHES[split]
    if found.layout == "cifar-batches":
        raw = {}
        for name in names:
            with open(found.root / CIFAR_DIR / name, "rb") as f:
                raw[name] = _read_batch(f, found.root / CIFAR_DIR / name)
    else:
        raw = _tar_batches(found.files[0], names)
    x = np.concatenate([raw[name][0] for name in names])
    y = np.concatenate([raw[name][1] for name in names])
    origin = CIFAR_DIR if found.layout == "cifar-batches" else CIFAR_TARBALL
    return _Pool(x, y, origin, True)


def _tar_batches(
    tarball: Path, names: tuple[str, ...]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    wanted = {f"{CIFAR_DIR}/{name}": name for name in names}
    raw = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.name in wanted:
                raw[wanted[member.name]] = _read_batch(tar.extractfile(member), tarball)
    if len(raw) != len(names):
        raise DataError(f"{tarball} lacks CIFAR-10 batches; {_REFETCH}")
    return raw


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR-10 batches: builds dicts, lists, bytes and numpy
    arrays, and refuses every other global, so a planted pickle cannot run code."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol 2 spells bytes under Python 3
    }

    def find_class(self, module: str, name: str) -> object:
        # the official batches say numpy.core (numpy 1), renamed numpy._core
        canonical = module.replace("numpy.core", "numpy._core", 1)
        if (canonical, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        if np.__version__.startswith("1."):
            canonical = canonical.replace("numpy._core", "numpy.core", 1)
        return super().find_class(canonical, name)


def _read_batch(f: IO[bytes], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3), labels (N,)) of one CIFAR-10 python batch."""
    try:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        y = np.asarray(batch[b"labels"], dtype=np.int64)
        # each row is 1024 red, 1024 green, 1024 blue values, row-major 32x32
        x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as err:  # unpickling foreign bytes can raise any type
        raise DataError(
            f"cannot read CIFAR-10 batch {path} ({type(err).__name__}: "
            f"{' '.join(str(err).split())}); {_REFETCH}"
        ) from None
    if len(x) != len(y):
        raise DataError(f"{path} has {len(x)} images but {len(y)} labels; {_REFETCH}")
    return np.ascontiguousarray(x), y
