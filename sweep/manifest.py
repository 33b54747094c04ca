"""The sweep directory's `sweep.json`, and the storage that holds it.

The manifest records what a sweep is before any trial runs: the figure and
profile, every cell's full config, and the provenance to reproduce it (git
revision, library versions, data checksums). `sweep resume` reads its cells
back from here, and a second `sweep run` into the same directory is refused
unless its search space is the same.

No Ray here (`sweep.launcher` lists the modules that import it), so the
analysis package may read manifests without it. Storage is
a local directory or a pyarrow URI (`s3://`, `gs://`, ...), as Tune's
`storage_path` accepts.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from sweep import __version__

MANIFEST = "sweep.json"
MANIFEST_SCHEMA = 1
GIT_TIMEOUT_S = 5  # `git rev-parse` answers in milliseconds; a hung one is no repo


class LaunchError(RuntimeError):
    """The sweep cannot start or resume; the message says why and what to do."""


@dataclass
class Plan:
    figure: str
    profile: str
    trials: list[dict[str, Any]]
    notes: dict[str, str]


# -- storage: a local directory or a URI ----------------------------------------


def is_uri(storage: str) -> bool:
    return "://" in storage


def experiment_path(storage: str, name: str) -> str:
    if is_uri(storage):
        return storage.rstrip("/") + "/" + name
    return str(Path(storage).expanduser().resolve() / name)


def check_storage(storage: str) -> str:
    """Make sure results can be written there; return the normalized path."""
    if is_uri(storage):
        try:
            fs, path = pafs.FileSystem.from_uri(storage)
            fs.create_dir(path, recursive=True)
        except Exception as exc:  # pyarrow raises many kinds
            raise LaunchError(f"storage {storage!r} is not usable: {exc}") from None
        return storage
    path = Path(storage).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise LaunchError(
            f"storage {storage!r} is a file, not a directory; pass --storage DIR"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise LaunchError(
            f"storage {storage!r} is not writable ({exc.strerror}); "
            "pass --storage with a directory you can write"
        ) from None
    return str(path)


def holds_files(exp: str) -> bool:
    """True when the directory exists and is not empty."""
    if is_uri(exp):
        fs, path = pafs.FileSystem.from_uri(exp)
        selector = pafs.FileSelector(path, allow_not_found=True)
        return bool(fs.get_file_info(selector))
    return Path(exp).is_dir() and any(Path(exp).iterdir())


# -- the manifest ---------------------------------------------------------------


def provenance(data_dir: str | None, datasets: set[str]) -> dict[str, Any]:
    """Git revision, library versions and data checksums, for the manifest."""
    import numpy
    import torch

    from sweep import data

    try:
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=GIT_TIMEOUT_S,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    return {
        "git": git or None,
        "versions": {
            "sweep": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            # the installed distribution's version, the same string as
            # ray.__version__, without importing Ray here
            "ray": importlib.metadata.version("ray"),
            "numpy": numpy.__version__,
        },
        "data": {d: data.checksums(d, data_dir) for d in sorted(datasets)},
    }


def write_manifest(
    exp: str,
    plan: Plan,
    data_dir: str | None,
    pack: int = 1,
    packs: list[list[int]] | None = None,
) -> None:
    """Record what this sweep is before any trial runs (atomically).

    A packed sweep (`--pack K`) also records K and the cells of each Tune trial.
    """
    document = {
        "schema": MANIFEST_SCHEMA,
        "figure": plan.figure,
        "profile": plan.profile,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "n_trials": len(plan.trials),
        "notes": plan.notes,
        "trials": plan.trials,
        **({"pack": pack, "packs": packs} if packs else {}),
        **provenance(data_dir, {t["dataset"] for t in plan.trials}),
    }
    text = json.dumps(document, indent=1)
    if is_uri(exp):
        fs, path = pafs.FileSystem.from_uri(exp)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{MANIFEST}") as out:
            out.write(text.encode())
        return

    # a temporary then a rename, so a reader never sees half a manifest
    Path(exp).mkdir(parents=True, exist_ok=True)
    tmp = Path(exp) / (MANIFEST + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, Path(exp) / MANIFEST)


def read_manifest(exp: str) -> dict[str, Any]:
    """The sweep.json of a sweep directory, checked to be one this version reads."""
    try:
        if is_uri(exp):
            fs, path = pafs.FileSystem.from_uri(exp)
            with fs.open_input_stream(f"{path}/{MANIFEST}") as src:
                raw = src.read()
        else:
            raw = (Path(exp) / MANIFEST).read_bytes()
    except (OSError, FileNotFoundError):
        raise LaunchError(
            f"{exp} is not a sweep directory (no {MANIFEST}); "
            "pass the directory that `sweep run` printed"
        ) from None
    try:
        document = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LaunchError(
            f"{exp}/{MANIFEST} is cut short or corrupt; restore it from a copy, "
            "or pass --name NEW to start another sweep"
        ) from None

    # the shape this version reads: a mapping of our schema that lists trials
    if not isinstance(document, dict):
        raise LaunchError(f"{exp}/{MANIFEST} is not a sweep manifest (not a mapping)")
    if document.get("schema") != MANIFEST_SCHEMA:
        raise LaunchError(
            f"{exp} was written by an incompatible version "
            f"(manifest schema {document.get('schema')!r}, this is "
            f"{MANIFEST_SCHEMA}); rerun it with the version that made it"
        )
    if not isinstance(document.get("trials"), list):
        raise LaunchError(f"{exp}/{MANIFEST} lists no trials; it is not a sweep")
    return document


def has_manifest(exp: str) -> bool:
    if is_uri(exp):
        fs, path = pafs.FileSystem.from_uri(exp)
        return fs.get_file_info(f"{path}/{MANIFEST}").type != pafs.FileType.NotFound
    return (Path(exp) / MANIFEST).exists()


# -- what a run may do with the directory it is given ----------------------------


def packs_of(manifest: dict) -> list[list[int]] | None:
    """The cells of each Tune trial of a packed sweep; None for one cell a trial."""
    packs = manifest.get("packs")
    return [list(map(int, p)) for p in packs] if isinstance(packs, list) else None


def decide(
    plan: Plan | None, exp: str, resume: bool, restorable: bool, pack: int = 1
) -> tuple[bool, list[dict]]:
    """Whether to resume, and the cells; refuse whatever would overwrite a sweep.

    `restorable` is whether Tune holds state there (`Tuner.can_restore`, which
    the launcher asks, so that this module needs no Ray). `pack` is the cells
    a trial a new run asks for; a sweep continues as it was started.
    """
    if resume or plan is None:
        manifest = read_manifest(exp)  # names the problem if it is not a sweep
        if not restorable:
            raise LaunchError(
                f"{exp} has no Ray Tune state to resume (it stopped before its "
                "first trial started); start it again with the same `sweep run`"
            )
        return True, manifest["trials"]
    if has_manifest(exp):
        manifest = read_manifest(exp)
        if manifest["trials"] != plan.trials:
            raise LaunchError(
                f"{exp} already holds a sweep with a different search space; "
                "pass --name NEW to start another, or `sweep resume` it"
            )
        started = manifest.get("pack", 1)
        if restorable and started != pack:
            raise LaunchError(
                f"{exp} was started with --pack {started}, not {pack}; "
                f"`sweep resume` it (it keeps --pack {started}), or pass --name NEW"
            )
        return restorable, plan.trials  # the same sweep: continue it
    if holds_files(exp):
        raise LaunchError(
            f"{exp} exists and is not a sweep (no {MANIFEST}); pass --name NEW "
            "or another --storage"
        )
    return False, plan.trials
