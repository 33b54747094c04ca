"""Parse the data files into pools of raw uint8 images, checking what they hold.

Formats: the npz archives of shared/data, LeCun's IDX files of MNIST (gz or
not), and CIFAR-10's python batches (in the tarball or extracted). Every file
that is truncated, corrupt or of the wrong shape is a `DataError` naming it.
Which files to read is `sweep.datafiles.find`'s answer.
"""

from __future__ import annotations

import functools
import gzip
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from sweep.datafiles import (
    CIFAR_BATCHES,
    CIFAR_DIR,
    CIFAR_TARBALL,
    MNIST_IDX,
    OFFICIAL,
    REFETCH,
    SHARED_NPZ,
    DataError,
    Found,
    verify,
)


@dataclass(frozen=True)
class Pool:
    """Raw images of one split from one source, in the order they are served."""

    x: np.ndarray  # (N, H, W, C) uint8, read-only
    y: np.ndarray  # (N,) int64 class labels (movie: the frame's index)
    origin: str  # file names, for messages
    exact: bool  # pixel-exact and in official order, so its first n are official


@functools.lru_cache(maxsize=16)
def read_pools(found: Found, split: str, stamps: tuple) -> tuple[Pool, ...]:
    """The pools of a split in `found`'s files, pixel-exact first, largest last.

    `stamps` ((path, size, mtime) of each file, see `datafiles.stamp`) keys the
    cache, so a replaced file is re-read; the arrays are shared, so read-only.
    """
    for path in found.files:
        if path.name in SHARED_NPZ:
            verify(path, *SHARED_NPZ[path.name])
        elif path.name == CIFAR_TARBALL:
            # the tarball holds pickles: read it only if it is the official one
            verify(path, *OFFICIAL[CIFAR_TARBALL])
    if found.layout == "npz":
        pools = [_npz_pool(path, split) for path in found.files]
    elif found.layout == "idx":
        pools = [_idx_pool(found, split)]
    else:
        pools = [_cifar_pool(found, split)]
    for pool in pools:
        pool.x.flags.writeable = False
    return tuple(pools)


def _npz_pool(path: Path, split: str) -> Pool:
    if path.name == "steamboat_willie_frames.npz":
        frames = _read_npz(path, ("frames",))["frames"]  # (382, 128, 128)
        return Pool(frames[..., None], np.arange(len(frames)), path.name, True)
    a = _read_npz(path, (f"x_{split}", f"y_{split}"))
    x, y = a[f"x_{split}"], a[f"y_{split}"].astype(np.int64)
    if x.ndim == 3:  # MNIST (N, 28, 28) -> (N, 28, 28, 1)
        x = x[..., None]
    if path.name == "cifar10_subset.npz":
        # grouped by class in the file; interleave by within-class rank so that
        # any first n is class-balanced (the official order is lost, see README)
        rank = _read_npz(path, (f"{split}_class_rank",))[f"{split}_class_rank"]
        order = np.lexsort((y, rank))
        return Pool(x[order], y[order], path.name, False)
    return Pool(x, y, path.name, True)


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Named arrays of an npz; a truncated, corrupt or incomplete one is a DataError."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            arrays = {k: archive[k] for k in keys if k not in missing}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(
            f"cannot read {path} ({type(err).__name__}); it is truncated or "
            f"corrupt: {REFETCH}"
        ) from None
    if missing:
        raise DataError(f"{path} lacks the key(s) {', '.join(missing)}; {REFETCH}")
    return arrays


def _idx_pool(found: Found, split: str) -> Pool:
    image_stem, label_stem = MNIST_IDX[split]
    paths = {p.name.removesuffix(".gz"): p for p in found.files}
    x = _read_idx(paths[image_stem], ndim=3)  # (N, 28, 28)
    y = _read_idx(paths[label_stem], ndim=1).astype(np.int64)
    if len(x) != len(y):
        raise DataError(
            f"{paths[image_stem]} has {len(x)} images but {paths[label_stem]} has "
            f"{len(y)} labels; {REFETCH}"
        )
    return Pool(x[..., None], y, paths[image_stem].name, True)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse LeCun's IDX format: 0, 0, type 0x08 (uint8), ndim, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"cannot read {path} ({type(err).__name__}); {REFETCH}"
        ) from None
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"{path} is not an IDX file of {ndim}-d bytes; {REFETCH}")
    dims = [int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4)]
    body = 4 + 4 * ndim
    if len(raw) - body != int(np.prod(dims)):
        raise DataError(
            f"{path} holds {len(raw) - body} data bytes but its header says "
            f"{int(np.prod(dims))} (truncated); {REFETCH}"
        )
    return np.frombuffer(raw, np.uint8, offset=body).reshape(dims)


def _cifar_pool(found: Found, split: str) -> Pool:
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
    return Pool(x, y, origin, True)


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
        raise DataError(f"{tarball} lacks CIFAR-10 batches; {REFETCH}")
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
            f"{' '.join(str(err).split())}); {REFETCH}"
        ) from None
    if len(x) != len(y):
        raise DataError(f"{path} has {len(x)} images but {len(y)} labels; {REFETCH}")
    return np.ascontiguousarray(x), y
