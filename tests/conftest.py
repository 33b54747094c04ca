import os
from pathlib import Path

# the real datasets live in ../shared/data beside the repository (see its README)
os.environ.setdefault(
    "SWEEP_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data")
)
