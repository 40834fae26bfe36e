"""Stream cameras through a tempseg model served by Triton (a repository from `python -m tempseg.export.triton`).

`python examples/triton_client.py --repo DIR [--url localhost:8001] [--cameras 2] [--frames 30]`

Each camera is one sequence: Triton keeps its state between frames (implicit state), so a request carries the
image only, the camera's sequence id, sequence_start on its first frame and sequence_end on its last (which
frees the sequence's slot). The frames here are random; a real client sends preprocessed camera frames
(normalised float32 RGB at the graph's size).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import InferInput, InferRequestedOutput, model_config_pb2

NUMPY_DTYPES = {"FP32": np.float32, "FP16": np.float16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8}


def read_config(model_dir: Path) -> Any:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def wire_dtype(data_type: int) -> str:
    """TYPE_FP32 -> FP32: the config's enum name is the wire name with a prefix."""
    return model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")


def request_shape(config: Any, dims: Sequence[int]) -> list[int]:
    """With max_batch_size > 0 the config's dims leave out the batch: one frame is a batch of 1."""
    return [1, *dims] if config.max_batch_size > 0 else list(dims)


def build_requests(config: Any, frames: Sequence[np.ndarray], sequence_id: int) -> list[dict[str, Any]]:
    """The keyword arguments of InferenceServerClient.infer for one camera's frames, in order."""
    spec = config.input[0]  # the image; a state-contract graph for Triton has no other input
    shape, dtype = request_shape(config, spec.dims), wire_dtype(spec.data_type)
    requests = []
    for t, frame in enumerate(frames):
        image = InferInput(spec.name, shape, dtype)
        image.set_data_from_numpy(np.ascontiguousarray(frame.reshape(shape), NUMPY_DTYPES[dtype]))
        requests.append(
            {
                "model_name": config.name,
                "inputs": [image],
                "outputs": [InferRequestedOutput(out.name) for out in config.output],
                "sequence_id": sequence_id,
                "sequence_start": t == 0,
                "sequence_end": t == len(frames) - 1,
            }
        )
    return requests


def main() -> None:
    import tritonclient.grpc as grpcclient

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repo", type=Path, required=True, help="the model repository the server loaded")
    p.add_argument("--url", default="localhost:8001", help="Triton's gRPC endpoint")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--frames", type=int, default=30)
    args = p.parse_args()
    model_dir = next(d for d in args.repo.iterdir() if (d / "config.pbtxt").is_file())
    config = read_config(model_dir)
    client = grpcclient.InferenceServerClient(args.url)
    rng = np.random.default_rng(0)
    shape = request_shape(config, config.input[0].dims)
    cameras = {
        1000 + c: build_requests(config, [rng.standard_normal(shape) for _ in range(args.frames)], 1000 + c)
        for c in range(args.cameras)
    }
    for t in range(args.frames):  # interleave cameras as live streams would arrive
        for camera, requests in cameras.items():
            result = client.infer(**requests[t])
            labels = result.as_numpy(config.output[0].name)
            print(f"camera {camera} frame {t}: {config.output[0].name} {labels.shape}")


if __name__ == "__main__":
    main()
