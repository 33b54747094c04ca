"""The data files on disk: which are expected, where they are, whether they are intact.

`find` picks the first directory that holds a dataset's files (the shared npz
archives, else the official MNIST IDX or CIFAR-10 python files) and downloads
the official files into the cache when none does; `verify` checks a file's size
and SHA-256 against the published values. Parsing the files is
`sweep.dataformats`; the user-facing API over both is `sweep.data`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """Data is missing, corrupt, or asked for in a way it cannot be served."""


class FetchFailed(Exception):
    """A download could not happen; the text says why."""


DATA_DIR_ENV = "SWEEP_DATA_DIR"
NO_DOWNLOAD_ENV = "SWEEP_NO_DOWNLOAD"  # set to 1 to forbid network access
DOWNLOAD_TIMEOUT_S = 20.0

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
# pixel-exact official-order archive first: it serves small n (see `data.images`)
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
REFETCH = "delete it and re-fetch it (shared/data/README.md or the official site)"


@dataclass(frozen=True)
class Found:
    """The files one directory holds for a dataset, and their layout."""

    layout: str  # "npz", "idx", "cifar-tarball" or "cifar-batches"
    root: Path
    files: tuple[Path, ...]


# ---------------------------------------------------------------- locating files


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/attractor-sweep, else ~/.cache/attractor-sweep."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attractor-sweep"


def named_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """`data_dir`, then $SWEEP_DATA_DIR, where given; a missing one is an error."""
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


def find(dataset: str, dirs: list[Path], named: list[Path]) -> Found:
    """The first of `dirs` with files for `dataset`; else download into the cache.

    `named` are the directories the user named (see `named_dirs`).
    """
    for d in dirs:
        # pickles of an extracted CIFAR-10 are read only from a directory the
        # user named, never from one that merely exists (the cache)
        found = _scan(dataset, d, trusted=d in named)
        if found:
            return found

    # nothing on disk: try the official download into the cache
    try:
        root = fetch(dataset, cache_dir())
    except FetchFailed as err:
        raise DataError(
            f"no {dataset} data found: looked for {_LOOKED_FOR[dataset]} in "
            f"{', '.join(map(str, dirs))}; {err}; pass --data-dir DIR or set "
            f"{DATA_DIR_ENV} to a directory holding them"
        ) from None
    return _scan(dataset, root, trusted=False)


def _scan(dataset: str, d: Path, trusted: bool) -> Found | None:
    if not d.is_dir():
        return None
    npz = tuple(d / name for name in NPZ_FILES[dataset] if (d / name).is_file())
    if npz:
        return Found("npz", d, npz)
    if dataset == "mnist":
        idx = [_idx_file(d, stem) for pair in MNIST_IDX.values() for stem in pair]
        if all(idx):
            return Found("idx", d, tuple(idx))
    if dataset == "cifar10":
        if (d / CIFAR_TARBALL).is_file():
            return Found("cifar-tarball", d, (d / CIFAR_TARBALL,))
        names = (*CIFAR_BATCHES["train"], *CIFAR_BATCHES["test"])
        batches = tuple(d / CIFAR_DIR / name for name in names)
        if trusted and all(p.is_file() for p in batches):
            return Found("cifar-batches", d, batches)
    return None


def _idx_file(d: Path, stem: str) -> Path | None:
    for path in (d / f"{stem}.gz", d / stem):
        if path.is_file():
            return path
    return None


# ---------------------------------------------------------------- downloading


def fetch(dataset: str, cache: Path) -> Path:
    """Download the official files of a known `dataset` into `cache`; return it.

    Raises FetchFailed when no download can happen (the movie, downloads
    forbidden, every mirror failed); files already there are verified instead.
    """
    if dataset == "movie":
        raise FetchFailed(
            "the movie frames have no official download (they come from the "
            "authors' video, see shared/data/README.md)"
        )
    if os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0"):
        raise FetchFailed(f"downloading is disabled ({NO_DOWNLOAD_ENV} is set)")
    cache.mkdir(parents=True, exist_ok=True)
    for name in _DOWNLOADS[dataset]:
        target = cache / name
        if target.is_file():
            verify(target, *OFFICIAL[name])
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
    raise FetchFailed(f"could not download {name} ({'; '.join(reasons)})")


# ---------------------------------------------------------------- verifying files

_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


def stamp(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): changes whenever the file is replaced."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def sha256(path: Path) -> str:
    """SHA-256 of a file, hashed once per (path, size, mtime) in this process."""
    key = stamp(path)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def verify(path: Path, size: int, sha: str) -> None:
    """A DataError unless the file has this size and SHA-256."""
    # the size check names truncation plainly and costs no hashing
    actual = path.stat().st_size
    if actual != size:
        raise DataError(
            f"{path} is {actual} bytes, not the expected {size} (truncated or "
            f"altered); {REFETCH}"
        )
    if sha256(path) != sha:
        raise DataError(
            f"{path} fails its SHA-256 checksum (expected {sha}); it is corrupt "
            f"or altered: {REFETCH}"
        )
