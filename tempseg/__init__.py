"""tempseg: temporal video segmentation from training to TensorRT engines on edge GPUs.

The stages are the repository's top-level folders (data, models, train, export, calibration, engine,
runtime, metrics, bench, common) and import each other as `tempseg.<stage>`, so an installed tempseg
never shadows a user's own `data` or `models` package. Installed, they are real subpackages of
tempseg (pyproject.toml maps each folder). In a checkout, this package reaches them in place: the
repository root joins its search path, and `python -m train` or `make` work from the root as before.
"""

from __future__ import annotations

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A checkout: the stage folders live beside this one, not in it (an installed tempseg holds them itself).
if not os.path.isdir(os.path.join(os.path.dirname(__file__), "runtime")) and os.path.isfile(
    os.path.join(_ROOT, "runtime", "__init__.py")
):
    __path__.append(_ROOT)

__version__ = "0.1.0"
