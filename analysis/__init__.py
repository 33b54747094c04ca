"""Read a sweep's stored results into tables, figures and a report.

Everything here is a pure function of what the trials wrote to disk: no Ray,
no retraining. `load` reads sweep directories into DataFrames, `tables` turns
them into the paper's tables, `plots` into its figures, and `report` writes
both as one self-contained HTML page.
"""

from analysis.load import Results, ResultsError, load_sweeps, save_tables

__all__ = ["Results", "ResultsError", "load_sweeps", "save_tables"]
