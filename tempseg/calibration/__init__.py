"""calibration stage: FP32 contract graph -> explicitly quantized INT8 (Q/DQ) graph + calib.json.

Ranges come from frames streamed in order with the state carried by the FP32 graph; ONNX
Runtime's quantizer writes symmetric int8 Q/DQ (per-channel weights, float biases) that
TensorRT 11 / TensorRT-RTX build as strongly typed INT8.
"""

from tempseg.calibration.config import KEEP_FLOAT_GROUPS, METHODS, CalibConfig, calibration_key
from tempseg.calibration.pipeline import calibrate
from tempseg.calibration.quantize import CalibrationError, keep_float_nodes
from tempseg.calibration.reader import StreamingCalibrationReader

__all__ = [
    "KEEP_FLOAT_GROUPS",
    "METHODS",
    "CalibConfig",
    "CalibrationError",
    "StreamingCalibrationReader",
    "calibrate",
    "calibration_key",
    "keep_float_nodes",
]
