"""tempseg: temporal video segmentation from training to TensorRT engines on edge GPUs.

One stage per subpackage (tempseg.data, .models, .train, .export, .calibration, .engine, .runtime,
.metrics, .common), each runnable as `python -m tempseg.<stage>`. The deployment side (engine,
runtime and what they import) needs no torch.
"""

__version__ = "0.1.0"
