"""One self-contained HTML report (and a terminal summary) of one or more sweeps.

Which sections appear follows the figure each sweep serves (its sweep.json, or
the trials' `figure` field, or, for a custom sweep, the axes that vary). The
report embeds every PNG as a base64 data URI and loads nothing from the
network, so the one file can be mailed or opened offline; its HTML is built by
`analysis.html`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import html, plots, tables
from analysis.html import STYLE as STYLE  # re-exported: it used to live here
from analysis.load import Results, load_sweeps, save_tables

log = logging.getLogger(__name__)

MAX_GALLERIES = 4  # trials shown per gallery section, one per setting of the axes
GRID_TABLES = {
    "fig3": tables.fig3, "fig4": tables.fig4, "fig6": tables.fig6,
    "fig8": tables.fig8, "fig9": tables.fig9,
}  # fmt: skip
SECTIONS = {  # figure -> the sections its report shows, in order
    "fig1a": ("gallery",), "fig2": ("gallery",), "fig1b": ("movie", "gallery"),
    "fig3": ("fig3", "fig11", "fig12", "gallery"),
    "fig4": ("fig4", "fig13", "gallery"),
    "fig5a": ("gallery", "radii"), "fig5b": ("fig5b",),
    "fig6": ("fig6", "fig7"), "fig7": ("fig6", "fig7"),
    "fig8": ("fig8", "movie", "gallery"), "fig9": ("fig9",),
    "fig11": ("fig11",), "fig12": ("fig12",), "fig13": ("fig13",),
    "fig14": ("fig14",), "custom": ("fig5b", "gallery"),
}  # fmt: skip
NOTES = {
    "fig3": "Training examples stored as attractors, optimizer x nonlinearity.",
    "fig4": "Training examples stored as attractors per initialization U[-a, a].",
    "fig6": "MNIST training examples stored as attractors, width x depth.",
    "fig7": "Top Jacobian eigenvalue modulus per training example (< 1: attractor).",
    "fig8": "Stored sequences that are stable limit cycles.",
    "fig9": "Examples stored in stable cycles when the n are split into cycles of L.",
    "fig11": "Where iteration from test and noise inputs ends, across optimizers.",
    "fig12": "Where iteration from test and noise inputs ends, across nonlinearities.",
    "fig13": "Where iteration from test and noise inputs ends, across initializations.",
    "fig5b": "Attractors found from test and noise inputs: in or outside training.",
    "fig14": "Are there attractors outside the training set?",
    "radii": "Top Jacobian eigenvalue modulus at each training example.",
    "gallery": "Starts, iterates, endpoints and the training image reached.",
    "movie": "Recall from noise: iterating the sequence encoder plays the sequence.",
}
GRID_NOTE = (
    "An example is an attractor when it is a fixed point and every eigenvalue of "
    "the Jacobian there has modulus < 1 (a cycle: of the product along it). A cell "
    "averages the seeds whose training reached target_mse (mean ± sample std, k "
    "seeds); NA when no seed did."
)


@dataclass
class Section:
    key: str
    title: str
    note: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    # figures are built only when a report is written: (file stem, builder)
    figures: list[tuple[str, Callable[[], Figure]]] = field(default_factory=list)
    movies: list[tuple[str, Callable[[Path], Path]]] = field(default_factory=list)


def figure_of(results: Results) -> pd.Series:
    """The figure each trial serves: sweep.json's, else its config's, else inferred."""
    trials = results.trials
    named = {}
    if "figure" in results.sweeps:
        named = results.sweeps.set_index("sweep")["figure"].dropna().to_dict()
    figure = trials["sweep"].map(named).fillna(trials["figure"]).map(_normalize)
    for sweep, rows in trials[figure == "custom"].groupby("sweep"):
        figure[rows.index] = infer_figure(trials[trials["sweep"] == sweep])
    return figure


def _normalize(name) -> str:
    name = str(name).strip().lower()
    return f"fig{name}" if name[:1].isdigit() else name


def infer_figure(trials: pd.DataFrame) -> str:
    """The paper figure whose axes a custom sweep varies."""
    axes = set(tables.varying(trials))
    if (trials["dataset"] == "movie").any():
        return "fig1b"
    for figure, keys in (
        ("fig3", {"optimizer", "nonlinearity"}),
        ("fig4", {"init", "init_scale"}),
        ("fig6", {"width", "depth"}),
        ("fig9", {"seq_len"}),
    ):
        if axes & keys:
            return figure
    return "custom"


def sections(results: Results) -> list[Section]:
    """Every section the results call for, in the order of the paper's figures."""
    out = [_training(results)]
    if results.trials.empty:
        return out
    figure = figure_of(results)
    for fig in sorted(figure.unique(), key=_figure_order):
        subset = _subset(results, set(_keys(results.trials)[figure == fig]))
        for key in SECTIONS.get(fig, SECTIONS["custom"]):
            section = _build(key, subset, fig)
            if section is not None:
                out.append(section)
    return out


def _figure_order(name: str) -> tuple:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 99, name)


def _keys(frame: pd.DataFrame) -> pd.Series:
    """sweep/trial_id: trial ids are unique within a sweep only."""
    return frame["sweep"].astype(str) + "/" + frame["trial_id"].astype(str)


def _subset(results: Results, keys: set) -> Results:
    def pick(frame):
        return frame[_keys(frame).isin(keys)] if "trial_id" in frame else frame

    return Results(
        sweeps=results.sweeps,
        trials=pick(results.trials),
        examples=pick(results.examples),
        cycles=pick(results.cycles),
        starts=pick(results.starts),
        spurious=pick(results.spurious),
    )


def _build(key: str, results: Results, fig: str) -> Section | None:
    if key in GRID_TABLES:
        return _grid(key, results)
    if key in tables.OUTCOME_AXES:
        return _outcomes(key, results)
    if key in ("fig7", "radii"):
        by = ("width", "depth") if key == "fig7" else ()
        return _radii(key, results, by)
    if key == "gallery":
        return _galleries(results, fig)
    if key == "movie":
        return _movie(results, fig)
    raise KeyError(f"unknown report section {key!r}; choose one of {sorted(NOTES)}")


def _training(results: Results) -> Section:
    counts = results.trials["status"].value_counts().to_dict()
    status = ", ".join(f"{counts.get(s, 0)} {s}" for s in counts) or "no trials"
    section = Section("training", "Trials", f"Status: {status}.")
    if not results.sweeps.empty:
        section.tables.append(("sweeps", results.sweeps))
    if not results.trials.empty:
        section.tables.append(("trials", tables.trial_summary(results.trials)))
    return section


def _grid(key: str, results: Results) -> Section | None:
    try:
        grid = GRID_TABLES[key](results.trials)
    except KeyError:  # a column the figure needs is missing
        return None
    section = Section(key, f"{key}: {grid.attrs['value']}", f"{NOTES[key]} {GRID_NOTE}")
    section.tables.append((key, tables.wide(grid)))
    section.tables.append((f"{key}_cells", grid))
    section.figures.append((f"{key}_heatmap", lambda: plots.heatmap(grid)))
    return section


def _outcomes(key: str, results: Results) -> Section | None:
    if results.starts.empty:
        return None
    by = [c for c in tables.OUTCOME_AXES[key] if c in results.starts]
    section = Section(key, f"{key}: where iteration ends", NOTES[key])
    section.tables.append((key, tables.outcomes(results.starts, by)))
    if by and not results.examples.empty:
        examples = results.examples
        section.figures.append((f"{key}_hits", lambda: plots.hits(examples, by)))
    return section


def _radii(key: str, results: Results, by) -> Section | None:
    if results.examples.empty:
        return None
    examples = results.examples
    section = Section(key, f"{key}: Jacobian spectral radii", NOTES[key])
    section.figures.append((f"{key}_radii", lambda: plots.radii(examples, by)))
    return section


def _with_gallery(results: Results) -> pd.DataFrame:
    trials = results.trials
    if "gallery" not in trials:
        return trials.iloc[:0]
    done = trials[(trials["status"] == "finished") & trials["gallery"].notna()]
    return done[[Path(p).exists() for p in done["gallery"]]]


def _galleries(results: Results, fig: str) -> Section | None:
    trials = _with_gallery(results)
    axes = tables.varying(results.trials)
    picks = trials.drop_duplicates(axes) if axes else trials
    section = Section(f"{fig}_gallery", f"{fig}: galleries", NOTES["gallery"])
    for row in picks.head(MAX_GALLERIES).itertuples():
        arrays = dict(np.load(row.gallery))
        if "iterates" not in arrays:
            continue
        label = ", ".join(f"{a}={getattr(row, a)}" for a in axes)
        section.figures.append(
            (
                f"{fig}_gallery_{row.trial_id}",
                lambda a=arrays, r=row: plots.gallery(a, r.image_shape, r.seq_len),
            )
        )
        section.note += f" {row.trial_id}: {label or 'the one setting'}."
    return section if section.figures else None


def _movie(results: Results, fig: str) -> Section | None:
    for row in _with_gallery(results).itertuples():
        arrays = dict(np.load(row.gallery))
        if "recall" not in arrays:
            continue
        recall, shape = arrays["recall"], row.image_shape
        section = Section(f"{fig}_movie", f"{fig}: recall from noise", NOTES["movie"])
        section.note += f" Trial {row.trial_id}, {recall.shape[1]} iterates."
        strip = lambda r=recall, s=shape: plots.movie_strip(r, s)  # noqa: E731
        gif = lambda path, r=recall, s=shape: plots.movie_gif(r, s, path)  # noqa: E731
        section.figures.append((f"{fig}_movie_strip", strip))
        section.movies.append((f"{fig}_movie", gif))
        return section
    return None


def summary_text(results: Results) -> str:
    """The report's tables as plain text for the terminal."""
    lines = []
    if results.warnings:
        lines += ["warnings:", *(f"  {w}" for w in results.warnings), ""]
    for section in sections(results):
        lines.append(f"== {section.title} ==")
        if section.note:
            lines.append(section.note)
        for name, frame in section.tables:
            if name == "sweeps" or name.endswith("_cells"):
                continue  # long forms of what the other tables already show
            lines += ["", tables.display(frame).to_string(), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(sweep_dirs, out_dir: str | Path) -> Path:
    """Write report.html, its PNGs and every table (Parquet and CSV) to out_dir."""
    results = load_sweeps(sweep_dirs)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    save_tables(results, out / "tables")

    # each section: its tables saved and shown, its figures drawn, saved, embedded
    body = [html.warning_list(results.warnings)]
    for section in sections(results):
        parts = []
        for name, frame in section.tables:
            if name.endswith("_cells"):
                _save_table(frame, out / "tables" / name)
                continue
            parts.append(html.titled_table(name, frame))
        for stem, build in section.figures:
            path = plots.save(build(), out / "figures" / f"{stem}.png")
            parts.append(html.image(path, "image/png", stem))
        for stem, write in section.movies:
            path = write(out / "figures" / f"{stem}.gif")
            parts.append(html.image(path, "image/gif", stem))
        body.append(html.section(section.key, section.title, section.note, parts))
    report = out / "report.html"
    report.write_text(html.page("\n".join(body), results))
    log.info("wrote the report of %d trials to %s", len(results.trials), report)
    return report


def _save_table(frame: pd.DataFrame, stem: Path) -> None:
    frame = frame.copy()
    frame.attrs = {}  # Parquet metadata must be JSON; attrs hold lists only anyway
    frame.to_parquet(stem.with_suffix(".parquet"), index=False)
    frame.to_csv(stem.with_suffix(".csv"), index=False)
