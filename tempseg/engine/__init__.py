"""engine stage: ONNX contract graph -> TensorRT / TensorRT-RTX engine + build record (`<engine>.json`).

Imports without TensorRT or torch; `engine.trt.load_tensorrt` imports TensorRT when a build needs it.
"""

from tempseg.engine.sidecar import check_engine, read_sidecar, sidecar_path

__all__ = ["check_engine", "read_sidecar", "sidecar_path"]
