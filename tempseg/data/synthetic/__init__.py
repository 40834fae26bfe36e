"""The synthetic street video renderer: the default data of every stage, with dense labels and exact flow.

Training, calibration, export's parity check and the benchmarks read it; the runtime library never
imports it (data/sources.py loads it only when a program asks for the "synthetic" source).
"""

from __future__ import annotations

from tempseg.data.synthetic.cityscapes_tree import write_cityscapes_tree
from tempseg.data.synthetic.video import SyntheticStream, SyntheticVideo, split_seed, synthetic_split

__all__ = ["SyntheticStream", "SyntheticVideo", "split_seed", "synthetic_split", "write_cityscapes_tree"]
