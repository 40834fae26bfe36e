"""ONNX Runtime runner: IO binding over preallocated OrtValues, two bindings swapped per frame.

Every tensor the session reads or writes is an OrtValue created once in activate(): the image
and label buffers share memory with the host numpy arrays, and each state has two OrtValues.
Binding A reads state buffer 0 and writes buffer 1, binding B the reverse; frames alternate
between them, so the state is never copied and nothing is bound or allocated per frame. A graph pair
(Accel) has a second session, the keyframe graph, with its own two bindings writing the same state
buffers; the schedule picks the session per frame.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tempseg.common.contract import Contract, check_keyframe_pair, contract_of_model, read_onnx_contract
from tempseg.common.errors import require
from tempseg.runtime.backends.base import MemoryInfo, PhaseTimes, Runner
from tempseg.runtime.memory import current_rss_bytes
from tempseg.runtime.schedule import KEYFRAME

BEFORE_ACTIVATE = "OnnxRuntimeRunner used before activate()"

if TYPE_CHECKING:  # both imported when used: the runtime imports without them
    import onnx


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(
        self,
        contract: Contract,
        onnx_path: str | os.PathLike[str] | Any,
        *,
        threads: int = 0,
        providers: list[str] | None = None,
        spinning: bool = True,
        keyframe: str | os.PathLike[str] | Any = None,
    ) -> None:
        """`onnx_path`: an ONNX file, or an onnx.ModelProto in memory (export's parity check).
        `keyframe`: the keyframe graph (file or ModelProto) of an update graph; by default the file its
        contract names, next to `onnx_path`.

        `spinning=False` stops ONNX Runtime's idle workers from busy-waiting after each run: needed
        where torch alternates with it on the same cores (export's parity check), or it starves torch.
        """
        super().__init__(contract)
        in_memory = hasattr(onnx_path, "SerializeToString")
        self.graph = onnx_path if in_memory else None
        self.onnx_path = None if in_memory else Path(onnx_path)
        self._main_graph = onnx_path if self.onnx_path is None else self.onnx_path  # what the session loads
        self.threads = threads
        self.spinning = spinning
        self.providers = providers or ["CPUExecutionProvider"]
        self._bindings: list = []
        self._states: list[list] = []
        self._parity = 0
        self._rss_growth: int | None = None
        self.keyframe_graph = keyframe
        if self.schedule is not None and keyframe is None:
            if self.onnx_path is None:
                raise ValueError("an update graph in memory needs its keyframe graph in memory too")
            self.keyframe_graph = self.onnx_path.parent / contract.schedule["keyframe_graph"]
        self._keyframe_bindings: list = []

    def activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        if not self.spinning or self.keyframe_graph is not None:
            # Two sessions take turns on the same cores: the idle one's spinning workers would steal them
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        rss_before = current_rss_bytes()
        self.session = ort.InferenceSession(_source(self._main_graph), options, providers=self.providers)
        self.keyframe_session = None
        if self.keyframe_graph is not None:
            self.keyframe_contract = read_keyframe(self.contract, self.keyframe_graph)
            self.keyframe_session = ort.InferenceSession(
                _source(self.keyframe_graph), options, providers=self.providers
            )
        c = self.contract
        self.image = np.zeros(c.image.shape, np.float32)
        self.labels = (
            np.zeros(c.labels.shape, np.int32) if c.labels else np.zeros((c.batch, c.height, c.width), np.int32)
        )
        self.logits = np.zeros(c.logits.shape, np.dtype(c.logits.dtype)) if c.logits else None
        self._allocate_flow()
        ov = ort.OrtValue.ortvalue_from_numpy
        self._values = {"image": ov(self.image), "labels": ov(self.labels)}
        if self.logits is not None:
            self._values["logits"] = ov(self.logits)
        if self.flow is not None:
            self._values["flow"] = ov(self.flow)
        self._state_arrays = [[np.zeros(s.shape, np.dtype(s.dtype)) for _ in range(2)] for s in c.states]
        self._states = [[ov(a) for a in pair] for pair in self._state_arrays]
        self._bindings = [self._bind(self.session, parity) for parity in (0, 1)]
        self._parity = 0
        self.session.run_with_iobinding(self._bindings[0])  # first run sizes the arena; not timed
        if self.keyframe_session is not None:
            self._keyframe_bindings = [self._bind(self.keyframe_session, p, keyframe=True) for p in (0, 1)]
            self.keyframe_session.run_with_iobinding(self._keyframe_bindings[0])
        self._rss_growth = max(0, current_rss_bytes() - rss_before)
        self.reset_state()

    def _bind(self, session: Any, parity: int, *, keyframe: bool = False):
        """Binding of `session` reading state buffer `parity` (a keyframe graph reads none), writing the other."""
        binding = session.io_binding()
        binding.bind_ortvalue_input("image", self._values["image"])
        if self.flow is not None and not keyframe:
            binding.bind_ortvalue_input("flow", self._values["flow"])
        for spec, pair in zip(self.contract.states, self._states, strict=True):
            if not keyframe:
                binding.bind_ortvalue_input(spec.input, pair[parity])
            binding.bind_ortvalue_output(spec.output, pair[1 - parity])
        if self.contract.labels:
            binding.bind_ortvalue_output("labels", self._values["labels"])
        if self.logits is not None:
            binding.bind_ortvalue_output("logits", self._values["logits"])
        return binding

    def deactivate(self) -> None:
        self._bindings, self._keyframe_bindings, self._states, self._values = [], [], [], {}
        self.session = self.keyframe_session = None

    def infer(self) -> PhaseTimes:
        kind = self.next_kind()
        start = time.perf_counter()
        if kind == KEYFRAME:
            require(self.keyframe_session, BEFORE_ACTIVATE).run_with_iobinding(self._keyframe_bindings[self._parity])
        else:
            require(self.session, BEFORE_ACTIVATE).run_with_iobinding(self._bindings[self._parity])
        if not self.contract.labels and self.logits is not None:  # a graph without labels has logits
            np.argmax(self.logits, axis=1, out=self.labels)
        self._parity ^= 1
        self._ran(kind)
        return PhaseTimes(compute=(time.perf_counter() - start) * 1e3, kind=kind)

    def reset_state(self, slots: Sequence[int] | None = None) -> None:
        rows = self._slots(slots)
        for pair in self._state_arrays:
            pair[self._parity][rows] = 0
        self._force_keyframe()

    def nonfinite_slots(self) -> list[int]:
        return sorted({int(s) for pair in self._state_arrays for s in _nonfinite_rows(pair[self._parity])})

    def state_addresses(self) -> tuple[int, ...]:
        return tuple(pair[self._parity].data_ptr() for pair in self._states)

    def state_inputs(self) -> dict[str, np.ndarray]:
        return {
            s.input: pair[self._parity].copy() for s, pair in zip(self.contract.states, self._state_arrays, strict=True)
        }

    def current_state(self, index: int = 0) -> np.ndarray:
        """The state buffer the next frame will read (a view, for tests and checks)."""
        return self._state_arrays[index][self._parity]

    def memory(self) -> MemoryInfo:
        """Initializers, host I/O and both OrtValues of each state; activations from the RSS growth."""
        c = self.contract
        weights = onnx_weight_bytes(self._main_graph)
        if self.keyframe_graph is not None:
            weights += onnx_weight_bytes(self.keyframe_graph)
        io = self.image.nbytes + self.labels.nbytes + (0 if self.logits is None else self.logits.nbytes)
        io += 0 if self.flow is None else self.flow.nbytes
        growth = self._rss_growth
        activation = None if growth is None else max(0, growth - weights - io - 2 * c.state_bytes)
        return MemoryInfo(
            params=c.extra.get("params"),
            weights_bytes=weights,
            activation_bytes=activation,
            state_bytes=2 * c.state_bytes,
            io_bytes=io,
            notes=[
                "onnxruntime: activation_bytes is the host RSS growth of session creation and the first run, "
                "less weights, I/O and state buffers"
            ],
        )


def _nonfinite_rows(state: np.ndarray) -> np.ndarray:
    """Indices along dim 0 (the batch slot) of the rows of `state` holding NaN or Inf."""
    return np.flatnonzero(~np.isfinite(state.reshape(len(state), -1)).all(axis=1))


def onnx_weight_bytes(path: str | os.PathLike[str] | onnx.ModelProto) -> int:
    """Bytes of the initializers (the weights) of an ONNX file or onnx.ModelProto."""
    import onnx

    model = onnx.load(str(path), load_external_data=False) if isinstance(path, (str, os.PathLike)) else path
    total = 0
    for init in model.graph.initializer:
        count = int(np.prod(init.dims)) if init.dims else 1
        total += count * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return total


def _source(graph: str | os.PathLike[str] | onnx.ModelProto) -> str | bytes:
    """What onnxruntime.InferenceSession takes for a file or an onnx.ModelProto in memory."""
    return str(graph) if isinstance(graph, (str, os.PathLike)) else graph.SerializeToString()


def read_keyframe(update: Contract, graph: str | os.PathLike[str] | Any) -> Contract:
    """The keyframe graph's contract, once it is the pair of `update` (UserError naming the file if not)."""
    in_memory = hasattr(graph, "SerializeToString")
    source = f"{update.model} keyframe graph" if in_memory else str(graph)
    contract = contract_of_model(graph, source) if in_memory else read_onnx_contract(graph)
    check_keyframe_pair(update, contract, source)
    return contract
