"""One Runner per backend (runtime/backends/base.py): ONNX Runtime, torch, TensorRT and TensorRT-RTX."""
