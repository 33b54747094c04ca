"""A Ray Tune trial that trains several cells of a sweep as one batched model.

`sweep run --pack K` hands Tune packs instead of cells: config["pack"] holds
the cells' indices in the sweep and their configs. Fully connected cells
train together through `sweep.packing.run_packed` (exactly as each would
alone, see `sweep.packing`); a conv or U-Net cell is a pack of one. Every
report carries the whole pack's checkpoint (`sweep.packing.files`), so a
retried or resumed pack continues each cell where it was, and a cell that
finished is never trained or measured again.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import ray
from ray import tune

from sweep.config import TrialConfig
from sweep.packing import run_packed
from sweep.packing.files import MEASUREMENTS_FILE, PackFiles, cell_dir_name
from sweep.trial import run_trial, stored_checkpoints, stored_trial_path


def train_pack(config: dict) -> None:
    """The Ray Tune trainable of a packed sweep: one pack, config["pack"]."""
    cells = [int(i) for i in config["pack"]["cells"]]
    cfgs = [TrialConfig.from_dict(c) for c in config["pack"]["configs"]]
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    import torch

    torch.set_num_threads(max(1, int(cpus)))

    with tempfile.TemporaryDirectory() as tmp:
        files = PackFiles(Path(tmp), cells)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                files.load(Path(d))
        adopt_stored_finals(files)
        if all(files.summary(c) is not None for c in cells):
            return  # finished before a resume: nothing to train or report

        def flush() -> None:
            metrics, directory = files.flush()
            ck = tune.Checkpoint.from_directory(str(directory)) if directory else None
            tune.report(metrics, checkpoint=ck)  # Tune copies it before returning

        fc = [k for k, cfg in enumerate(cfgs) if cfg.model == "fc"]
        if fc:
            sinks = [files.cell(cells[k]) for k in fc]
            run_packed([cfgs[k] for k in fc], sinks, flush=flush)
        for k in (k for k, cfg in enumerate(cfgs) if cfg.model != "fc"):
            run_trial(cfgs[k], files.cell(cells[k]))
            flush()


def adopt_stored_finals(files: PackFiles) -> None:
    """Take each cell's final record from the newest stored checkpoint holding it.

    A driver killed right after a cell finished leaves Tune's last snapshot
    pointing at an older checkpoint than the newest one on storage; the cells
    finished in between are not run again.
    """
    path = stored_trial_path()
    if not path:
        return
    fs, root, checkpoints = stored_checkpoints(path)
    for cell in files.cells:
        if files.summary(cell) is not None:
            continue
        for name in checkpoints:
            source = f"{root}/{name}/{cell_dir_name(cell)}"
            if fs.get_file_info(f"{source}/{MEASUREMENTS_FILE}").is_file:
                with tempfile.TemporaryDirectory() as tmp:
                    pafs.copy_files(
                        source,
                        tmp,
                        source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem(),
                    )
                    files.adopt(cell, Path(tmp))
                break
