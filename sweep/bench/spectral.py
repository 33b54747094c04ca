"""Jacobian spectral radius: matrix-free ARPACK against dense eigenvalues.

Ours is `sweep.spectra`'s "matfree" method: ARPACK on Jacobian-vector products
of a traced linearization, never forming the d x d Jacobian. The plain version
forms the Jacobian (`torch.func.jacrev`) and takes all its eigenvalues with
numpy. Both run on a float64 copy of the net, as `sweep.measure` does, so they
can agree to far better than the 1e-4 asked.
"""

from __future__ import annotations

import copy

import torch

from sweep import spectra
from sweep.bench.timing import Row, interleave, median, speedup
from sweep.data import images
from sweep.models import build_model
from sweep.training import Trainer, make_optimizer

AGREE_TOL = 1e-4  # relative difference the two radii must stay under
LR = 1e-4
LEGEND = (
    "spectra: ours = sweep.spectra 'matfree' (ARPACK on traced JVPs); plain = "
    "'dense' (torch.func.jacrev, then numpy eigvals); float64 net and point"
)


def bench_spectra(
    dataset: str,
    n_train: int,
    train_epochs: int,
    rounds: int,
    width: int = 256,
    depth: int = 11,
    image_size: int | None = None,
) -> list[Row]:
    # a briefly trained net, measured at its first training image, in float64
    torch.set_num_threads(1)
    x = images(dataset, "train", n_train, image_size=image_size)
    shape, x = tuple(x.shape[1:]), x.reshape(n_train, -1)
    torch.manual_seed(0)
    model = build_model("fc", shape, width=width, depth=depth, nonlinearity="selu")
    optimizer = make_optimizer("adam", model.parameters(), LR)
    Trainer(model, optimizer, x, x, max_epochs=max(train_epochs, 1)).run(train_epochs)
    f = copy.deepcopy(model).double().eval()
    point = x[0].double()
    radii: dict[str, float] = {}

    def run(method: str):
        def go() -> None:
            radii[method] = spectra.spectral_radius(f, point, method)

        return go

    # no warm-up round: a dense radius at d = 3072 takes a minute, and each
    # matfree radius traces its own linearization anyway
    times = interleave({m: run(m) for m in ("matfree", "dense")}, rounds, warm_up=False)
    gap = abs(radii["matfree"] - radii["dense"]) / radii["dense"]
    verdict = "agree" if gap <= AGREE_TOL else "DISAGREE"
    return [
        Row(
            "spectra",
            f"{dataset} d={x.shape[1]}, fc {depth}x{width}, float64",
            "matfree ARPACK, 1 thread",
            median(times["matfree"]),
            "dense jacrev + eigvals, 1 thread",
            median(times["dense"]),
            speedup(times["dense"], times["matfree"]),
            unit="radius",
            aim="10x, same radius to 1e-4",
            notes={
                "radius": f"matfree {radii['matfree']:.10f}, dense "
                f"{radii['dense']:.10f}, relative difference {gap:.1e} ({verdict})",
                "net": f"trained {train_epochs} epochs on {n_train} {dataset} images",
            },
            values=dict(
                radius_matfree=radii["matfree"],
                radius_dense=radii["dense"],
                relative_difference=gap,
            ),
        )
    ]
