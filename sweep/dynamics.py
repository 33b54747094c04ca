"""Iterate a trained map x_{k+1} = f(x_k) and classify what it stores.

A training example is stored as an attractor when it is a fixed point of f and
the spectral radius of J_f there is below 1; a sequence is stored as a limit
cycle when f walks it and the radius of the ordered product of the Jacobians
along it is below 1 (Radhakrishnan, Belkin & Uhler 2020; see PAPER.md and
sweep.spectra). `measure_cycles` checks those two criteria at the stored data;
`classify_starts` iterates many inputs and sorts where each one ends.

Maps are batched callables (b, d) -> (b, d), e.g. an nn.Module in eval mode;
rows must not interact (no batch norm in training mode). Relative distances
are ||a - b|| / ||b|| with b the stored point (or the orbit point) compared to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sweep.orbits import Anchors, find_periods, iterate_batched, nearest, orbit
from sweep.spectra import cycle_radii, cycle_spectral_radius

Map = Callable[[Tensor], Tensor]

OUTCOMES = ("train", "cycle", "spurious_fixed", "spurious_cycle", "diverged", "unsettled")
STATUSES = ("settled", "diverged", "unsettled")
