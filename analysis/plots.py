"""The paper's figures from stored results; each function returns a Figure.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot state), with
the non-interactive Agg backend, so nothing here opens a window or leaks
figures; only `movie_gif` and `analysis.report` write files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402  (after the backend is chosen)
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from analysis import tables  # noqa: E402

PANEL_IN = 1.3  # inches per image panel
TITLE_IN = 0.25  # inches above each row of panels for their titles
MAX_PANEL_COLS = 4  # panels per row in multi-panel plots
STABILITY_LINE = 1.0  # |eigenvalue| = 1 divides attractors from the rest
DARK_TEXT_ABOVE = 0.6  # viridis turns light above ~60% of its range
NA_COLOUR = "0.85"  # NA cells: grey and hatched, never drawn as 0


def as_image(flat: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """A flattened (d,) image as (h, w) or (h, w, 3), clipped to [0, 1] for display."""
    c, h, w = image_shape
    x = np.nan_to_num(np.asarray(flat, dtype=np.float32)).reshape(c, h, w)
    x = np.clip(x, 0.0, 1.0)  # noise starts N(0, 1) leave [0, 1]
    return x[0] if c == 1 else x.transpose(1, 2, 0)


def _show(ax, flat, image_shape, title: str | None = None) -> None:
    ax.imshow(as_image(flat, image_shape), cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _blank(ax, text: str = "") -> None:
    ax.set_facecolor(NA_COLOUR)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(
        0.5, 0.5, text, ha="center", va="center", fontsize=7, transform=ax.transAxes
    )


def gallery(
    gallery: Mapping[str, np.ndarray],
    image_shape: Sequence[int],
    seq_len: int = 1,
    n_iterates: int = 3,
    max_rows: int | None = None,
) -> Figure:
    """Figs 1a, 2, 5a, 8: per start, the start, some iterates, the end, what it reached.

    `gallery` is the trial's gallery.npz (np.load of it, or a dict of its
    arrays). Columns: start, `n_iterates` iterates, end, and the training image
    the start reached (the nearest element of the cycle for outcome "cycle";
    blank when it reached none).
    """
    train = np.asarray(gallery["train"])  # (n, d)
    if "iterates" not in gallery:
        return _image_row(train, image_shape, "training images (no starts stored)")
    iterates = np.asarray(gallery["iterates"])  # (g, T, d)
    steps = np.asarray(gallery["steps"])
    g, n_steps, _ = iterates.shape
    n_rows = g if max_rows is None else min(g, max_rows)

    # the iterates shown lie strictly between the start and the end
    inner = np.linspace(1, n_steps - 2, n_iterates) if n_steps > 2 else []
    middle = list(dict.fromkeys(int(round(j)) for j in inner))
    n_cols = len(middle) + 3
    fig = Figure(figsize=(PANEL_IN * n_cols, (PANEL_IN + TITLE_IN) * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i in range(n_rows):
        kind, outcome = str(gallery["start_kind"][i]), str(gallery["outcome"][i])
        end_step = int(gallery["end_steps"][i])
        row = axes[i]
        _show(row[0], iterates[i, 0], image_shape, f"{kind} start")
        row[0].set_ylabel(outcome, fontsize=8)
        # only iterates from before the start settled are "along the way"
        before = [j for j in range(1, n_steps - 1) if steps[j] < end_step]
        picks = [
            before[int(round(k))]
            for k in np.linspace(0, len(before) - 1, min(len(middle), len(before)))
        ]
        padded = (picks + [None] * len(middle))[: len(middle)]
        for ax, j in zip(row[1 : len(middle) + 1], padded, strict=True):
            if j is None:
                ax.axis("off")
            else:
                _show(ax, iterates[i, j], image_shape, f"step {int(steps[j])}")
        _show(row[-2], iterates[i, -1], image_shape, f"end (step {end_step})")
        _reached(row[-1], gallery, i, train, image_shape, seq_len)
    fig.suptitle("iteration x_{k+1} = f(x_k) from test and noise starts", fontsize=9)
    fig.tight_layout()
    return fig


def _reached(ax, gallery, i: int, train, image_shape, seq_len: int) -> None:
    """The training image a start ended on, or a blank panel."""
    outcome, target = str(gallery["outcome"][i]), int(gallery["target"][i])
    if outcome == "train" and 0 <= target < len(train):
        _show(ax, train[target], image_shape, f"reached train #{target}")
    elif outcome == "cycle" and target >= 0:
        # a start on a cycle can be anywhere along it: show the nearest element
        cycle = train[target * seq_len : (target + 1) * seq_len].astype(np.float32)
        end = np.asarray(gallery["iterates"][i, -1], dtype=np.float32)
        j = int(np.argmin(np.linalg.norm(cycle - end, axis=1)))
        _show(ax, cycle[j], image_shape, f"cycle {target}, #{target * seq_len + j}")
    else:
        _blank(ax, outcome.replace("_", " "))
        ax.set_title("no training image", fontsize=7)


def _image_row(images: np.ndarray, image_shape, title: str) -> Figure:
    fig = Figure(figsize=(PANEL_IN * max(1, len(images)), PANEL_IN + 0.4))
    axes = fig.subplots(1, max(1, len(images)), squeeze=False)[0]
    for k, (ax, x) in enumerate(zip(axes, images, strict=False)):
        _show(ax, x, image_shape, f"#{k}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def movie_strip(
    recall: np.ndarray,
    image_shape: Sequence[int],
    n: int = 10,
    which: int = 0,
    per_row: int = 10,
) -> Figure:
    """Fig 1b: n frames, evenly spaced, of one recall that started from noise."""
    frames = np.asarray(recall[which])  # (T2, d)
    picks = np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))
    n_rows = -(-len(picks) // per_row)
    n_cols = min(per_row, len(picks))
    fig = Figure(figsize=(PANEL_IN * n_cols, (PANEL_IN + TITLE_IN) * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, k in zip(axes, picks, strict=False):
        _show(ax, frames[k], image_shape, f"step {k}")
    for ax in axes[len(picks) :]:
        ax.remove()
    fig.suptitle("recall from noise: iterating f plays the stored sequence", fontsize=9)
    fig.tight_layout()
    return fig


def movie_gif(
    recall: np.ndarray,
    image_shape: Sequence[int],
    path: str | Path,
    which: int = 0,
    fps: int = 30,
    max_frames: int = 400,
) -> Path:
    """Write one recall as an animated GIF (every k-th frame beyond max_frames)."""
    frames = np.asarray(recall[which])  # (T2, d)
    stride = max(1, -(-len(frames) // max_frames))
    images = [
        Image.fromarray((as_image(x, image_shape) * 255).round().astype(np.uint8))
        for x in frames[::stride]
    ]
    path = Path(path)
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 * stride / fps)),
        loop=0,
    )
    return path


def _panels(n: int, width_in: float = 3.2, height_in: float = 2.4):
    n_cols = max(1, min(MAX_PANEL_COLS, n))
    n_rows = max(1, -(-n // n_cols))
    fig = Figure(figsize=(width_in * n_cols, height_in * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def _groups(frame: pd.DataFrame, by: Sequence[str]):
    """(title, sub-frame) per group of the `by` columns present in the frame."""
    by = [c for c in by if c in frame]
    if not by or frame.empty:
        return [("all", frame)]
    out = []
    for key, sub in frame.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        out.append((", ".join(f"{c}={v}" for c, v in zip(by, key, strict=True)), sub))
    return out


def radii(
    examples: pd.DataFrame,
    by: Sequence[str] = ("width", "depth"),
    converged_only: bool = True,
) -> Figure:
    """Fig 7: top Jacobian eigenvalue modulus at each training example, per group.

    Below the line at 1 the example is an attractor (eigenvalues, not singular
    values, decide: the top singular value only bounds the spectral radius).
    """
    used = tables.finished(examples, converged_only)
    groups = _groups(used, by)
    fig, axes = _panels(len(groups))
    for ax, (title, sub) in zip(axes, groups, strict=True):
        for _, trial in sub.groupby("trial_id"):
            seed = trial["seed"].iloc[0]
            ax.plot(trial["index"], trial["spectral_radius"], "o", ms=3,
                    label=f"seed {seed}")  # fmt: skip
        ax.axhline(STABILITY_LINE, color="k", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("training example")
        ax.set_ylabel("spectral radius of J_f(x_i)")
        if len(sub):
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def hits(
    examples: pd.DataFrame,
    by: Sequence[str] = ("optimizer",),
    converged_only: bool = True,
) -> Figure:
    """Figs 11-13: how many test and noise starts reached each training example."""
    by = [c for c in by if c in examples]
    table = tables.hits_per_example(examples, by, converged_only)
    groups = _groups(table, by)
    fig, axes = _panels(len(groups))
    bar = 0.4
    for ax, (title, sub) in zip(axes, groups, strict=True):
        ax.bar(sub["index"] - bar / 2, sub["hits_test"], bar, label="test starts")
        ax.bar(sub["index"] + bar / 2, sub["hits_noise"], bar, label="noise starts")
        n_trials = int(sub["n_trials"].max()) if len(sub) else 0
        runs = "run" if n_trials == 1 else "runs"
        ax.set_title(f"{title} ({n_trials} {runs})", fontsize=8)
        ax.set_ylim(0, max(1, ax.get_ylim()[1]))  # counts: never below 0
        ax.set_xlabel("training example")
        ax.set_ylabel("starts that reached it")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def heatmap(grid: pd.DataFrame, value: str = "mean") -> Figure:
    """A grid table (of `tables.grid_table`) as a heatmap; NA cells grey and hatched."""
    numbers = tables.wide(grid, value).astype(float)
    counts = tables.wide(grid, "k")
    spread = tables.wide(grid, "std")
    fig = Figure(figsize=(1.4 * numbers.shape[1] + 2.5, 0.7 * numbers.shape[0] + 1.5))
    ax = fig.subplots()
    data = np.ma.masked_invalid(numbers.to_numpy())
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=NA_COLOUR)
    image = ax.imshow(data, cmap=cmap, aspect="auto")

    # write each cell's numbers; hatch the cells without converged seeds
    for (r, c), mean in np.ndenumerate(numbers.to_numpy()):
        if np.isnan(mean):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="//",
                                   edgecolor="0.5", lw=0))  # fmt: skip
            ax.text(c, r, tables.NA, ha="center", va="center", fontsize=8)
            continue
        std, k = spread.iat[r, c], counts.iat[r, c]
        text = f"{mean:.1f}" + ("" if np.isnan(std) else f" ± {std:.1f}") + f"\nk={k}"
        light = image.norm(mean) > DARK_TEXT_ABOVE  # dark text on light colours
        ax.text(c, r, text, ha="center", va="center", fontsize=7,
                color="k" if light else "w")  # fmt: skip
    ax.set_xticks(range(numbers.shape[1]), [_label(v) for v in numbers.columns])
    ax.set_yticks(range(numbers.shape[0]), [_label(v) for v in numbers.index])
    ax.set_xlabel(" / ".join(grid.attrs.get("cols", [])))
    ax.set_ylabel(" / ".join(grid.attrs.get("rows", [])))
    ax.set_title(f"{grid.attrs.get('value', value)} ({value} over converged seeds)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def _label(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as PNG (used by the report and the CLI)."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path
