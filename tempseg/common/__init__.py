"""Pieces every stage shares: user-facing errors, atomic artefact writes, the ONNX contract.

Nothing here imports torch, so runtime/ and engine/ can use it on a Jetson.
"""
