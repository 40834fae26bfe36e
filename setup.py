"""Packaging: the stage folders install as subpackages of `tempseg` (metadata is in pyproject.toml).

Each top-level stage folder maps to tempseg.<stage>, and its subpackages are found, not listed, so a
new one (runtime/backends/) can never be left out of the wheel.
"""

from setuptools import find_packages, setup

STAGES = ("common", "data", "models", "train", "export", "calibration", "engine", "runtime", "metrics", "bench")

setup(
    packages=["tempseg"]
    + [f"tempseg.{stage}.{sub}".rstrip(".") for stage in STAGES for sub in ["", *find_packages(stage)]],
    package_dir={"tempseg": "tempseg", **{f"tempseg.{stage}": stage for stage in STAGES}},
)
