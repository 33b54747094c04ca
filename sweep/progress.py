"""A live progress line for the driver: done, running, failed, ETA.

Tune's own console output rounds small MSEs to 0 and ignores custom
reporters, so the CLI draws its own from a `tune.Callback` (driver side only;
workers never print).
"""

from __future__ import annotations

import sys
import time

from ray import tune

from sweep import metrics as m

REDRAW_S = 1.0  # at most one redraw per second on a terminal
LOG_EVERY_S = 15.0  # one line per interval when output goes to a file or CI log


class ProgressCallback(tune.Callback):
    def __init__(self, n_trials: int, stream=None):
        self.n_trials = n_trials
        self.stream = stream
        self.t0 = time.monotonic()
        self.last_draw = 0.0
        self.done_here = 0  # cells finished by this run (for the ETA)
        self.best_mse: dict[str, float] = {}
        self.cells_done: dict[str, int] = {}  # of each packed trial, as reported
        self.completed: set[str] = set()  # trials known to have finished
        self.seen: set[str] = set()

    def __getstate__(self):
        # the Tuner pickles its callbacks; the stream is not picklable
        return {k: v for k, v in self.__dict__.items() if k != "stream"}

    def __setstate__(self, state):
        self.__dict__.update(state, stream=None)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if m.MSE in result:
            self.best_mse[trial.trial_id] = result[m.MSE]
        if m.CELLS_DONE in result:
            before = self.cells_done.get(trial.trial_id, 0)
            self.cells_done[trial.trial_id] = result[m.CELLS_DONE]
            self.done_here += max(0, result[m.CELLS_DONE] - before)
        self._draw(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # complete means it returned (Tune's done) or sent its final record,
        # not that an interrupted sweep stopped it
        last = trial.last_result or {}
        if last.get(m.FINAL) or last.get("done"):
            if m.CELLS_DONE not in last:
                self.done_here += 1  # a packed trial counted its cells as they ended
            self.completed.add(trial.trial_id)  # Tune marks it TERMINATED after this
        self._draw(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._draw(trials, force=True)

    def on_step_end(self, iteration, trials, **info):
        self._draw(trials)

    def on_experiment_end(self, trials, **info):
        self._draw(trials, force=True)
        if self._out().isatty():
            self._out().write("\n")
            self._out().flush()

    def _out(self):
        return self.stream or sys.stderr

    def _draw(self, trials, force: bool = False) -> None:
        now = time.monotonic()
        out = self._out()
        tty = out.isatty()
        if not force and now - self.last_draw < (REDRAW_S if tty else LOG_EVERY_S):
            return
        self.last_draw = now
        # counted in cells: a packed trial holds several, finishing one by one
        done = running = failed = 0
        for t in trials:
            if t.trial_id not in self.seen:  # as a resumed sweep finds it
                self.seen.add(t.trial_id)
                if t.status == "TERMINATED":
                    self.completed.add(t.trial_id)
                last = t.last_result or {}
                self.cells_done.setdefault(t.trial_id, last.get(m.CELLS_DONE, 0))
            n = _cells(t)
            ended = t.trial_id in self.completed
            finished = n if ended else self._done(t, n)
            done += finished
            running += n - finished if t.status == "RUNNING" and not ended else 0
            failed += n - finished if t.status == "ERROR" else 0
        total = max(self.n_trials, done + running + failed)
        left = total - done - failed
        elapsed = now - self.t0
        eta = "?"
        if self.done_here and left:
            eta = _duration(elapsed / self.done_here * left)
        elif not left:
            eta = "0s"
        width = 24
        filled = int(width * (done + failed) / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"[{bar}] {done}/{total} done, {running} running, {failed} failed, "
            f"elapsed {_duration(elapsed)}, ETA {eta}"
        )
        out.write(f"\r{line}   " if tty else f"{line}\n")
        out.flush()

    def _done(self, trial, n: int) -> int:
        return min(n, int(self.cells_done.get(trial.trial_id, 0)))


def _cells(trial) -> int:
    pack = (trial.config or {}).get("pack")
    return len(pack["cells"]) if isinstance(pack, dict) else 1


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
