"""The ONNX state contract: what the deployment side needs to run a graph, read from the file.

Graph I/O: input `image` [N,3,H,W] float32 then `state_in.<k>`; outputs `logits` and/or
`labels`, then `state_out.<k>` (state_out.k feeds state_in.k on the next frame). The JSON under
metadata key `tempseg` adds classes, palette, normalisation, precision and provenance. A graph
without that metadata still runs if its names follow the contract (defaults: ImageNet
normalisation, class names "0".."C-1").

A keyframe family (Accel) is a pair of graphs: the `update` graph, run on most frames, takes a `flow` input
too (unless it computes the flow itself) and names its `keyframe` graph, which has no state inputs and
writes every state. The update graph's `schedule` says which file that is, the default keyframe interval and
what the flow is; the runtime needs nothing else.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tempseg.common.errors import UserError

METADATA_KEY = "tempseg"
CONTRACT_VERSION = 1
IMAGE = "image"
LOGITS = "logits"
LABELS = "labels"
FLOW = "flow"
ROLES = ("frame", "update", "keyframe")  # one graph per frame; or the two graphs of a keyframe schedule
STATE_IN = re.compile(r"^state_in\.(\d+)$")
STATE_OUT = re.compile(r"^state_out\.(\d+)$")
DTYPE_BYTES = {"float32": 4, "float16": 2, "int32": 4, "int64": 8, "uint8": 1, "int8": 1, "bool": 1}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class StateSpec:
    """One state pair: `output` of frame t is `input` of frame t+1."""

    input: str
    output: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return TensorSpec(self.input, self.shape, self.dtype).nbytes


@dataclass(frozen=True)
class Contract:
    """Everything the runtime discovers about a graph or engine."""

    model: str
    num_classes: int
    image: TensorSpec
    states: tuple[StateSpec, ...]
    logits: TensorSpec | None
    labels: TensorSpec | None
    precision: str = "fp32"
    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    color_order: str = "RGB"
    checkpoint_sha256: str | None = None
    source_onnx_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    role: str = "frame"
    flow: TensorSpec | None = None  # the update graph's flow input, where the flow comes from the host
    schedule: dict[str, Any] = field(default_factory=dict)  # update graph: keyframe_graph, keyframe_every, flow

    @property
    def reads_states(self) -> bool:
        """False for a keyframe graph: it writes the states without reading them."""
        return self.role != "keyframe"

    @property
    def batch(self) -> int:
        return self.image.shape[0]

    @property
    def height(self) -> int:
        return self.image.shape[2]

    @property
    def width(self) -> int:
        return self.image.shape[3]

    @property
    def state_bytes(self) -> int:
        return sum(s.nbytes for s in self.states)

    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes else [str(i) for i in range(self.num_classes)]

    def to_json(self) -> str:
        return json.dumps({"contract": CONTRACT_VERSION, **asdict(self)}, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> Contract:
        data = json.loads(text)
        version = data.pop("contract", None)
        if version != CONTRACT_VERSION:
            raise ValueError(f"contract version {version} is not {CONTRACT_VERSION}")
        tensor = lambda d: TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])  # noqa: E731
        optional = lambda d: None if d is None else tensor(d)  # noqa: E731
        return cls(
            model=data["model"],
            num_classes=int(data["num_classes"]),
            image=tensor(data["image"]),
            states=tuple(StateSpec(s["input"], s["output"], tuple(s["shape"]), s["dtype"]) for s in data["states"]),
            logits=optional(data.get("logits")),
            labels=optional(data.get("labels")),
            precision=data.get("precision", "fp32"),
            classes=tuple(data.get("classes", ())),
            palette=tuple(tuple(c) for c in data.get("palette", ())),
            mean=tuple(data.get("mean", cls.mean)),
            std=tuple(data.get("std", cls.std)),
            color_order=data.get("color_order", "RGB"),
            checkpoint_sha256=data.get("checkpoint_sha256"),
            source_onnx_sha256=data.get("source_onnx_sha256"),
            extra=data.get("extra", {}),
            role=data.get("role", "frame"),
            flow=optional(data.get("flow")),
            schedule=data.get("schedule", {}),
        )

    def with_changes(self, **changes: Any) -> Contract:
        return replace(self, **changes)


def graph_io(model: Any) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
    """Inputs and outputs of an onnx.ModelProto as TensorSpecs (initializers excluded)."""
    import onnx  # lazy: only the ONNX paths need it

    initializers = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(value.name, dims, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name)

    inputs = {v.name: spec(v) for v in model.graph.input if v.name not in initializers}
    return inputs, {v.name: spec(v) for v in model.graph.output}


def contract_from_io(inputs: dict[str, TensorSpec], outputs: dict[str, TensorSpec], source: str) -> Contract:
    """Derive a contract from tensor names alone (a graph or engine without tempseg metadata)."""
    if IMAGE not in inputs:
        raise UserError(
            f"no input named '{IMAGE}' (inputs: {', '.join(inputs) or 'none'}); not a state-contract graph", source
        )
    states: list[tuple[int, StateSpec]] = []  # (k of state_in.k, spec)
    for name, spec in inputs.items():
        match = STATE_IN.match(name)
        if match is None:
            if name != IMAGE:
                raise UserError(f"unexpected input '{name}': the contract allows '{IMAGE}' and 'state_in.<k>'", source)
            continue
        out_name = f"state_out.{match[1]}"
        if out_name not in outputs:
            raise UserError(f"input {name} has no matching output {out_name}", source)
        states.append((int(match[1]), StateSpec(name, out_name, spec.shape, spec.dtype)))
    logits, labels = outputs.get(LOGITS), outputs.get(LABELS)
    if logits is None and labels is None:
        raise UserError(f"no '{LOGITS}' or '{LABELS}' output (outputs: {', '.join(outputs)})", source)
    # Without logits or metadata the class count is unknown: take the whole uint8 label range
    # (metrics count only the classes that occur, so mIoU is still right).
    num_classes = logits.shape[1] if logits is not None else 256
    return Contract(
        model=Path(source).stem,
        num_classes=num_classes,
        image=inputs[IMAGE],
        states=tuple(state for _, state in sorted(states, key=lambda pair: pair[0])),
        logits=logits,
        labels=labels,
    )


def check_against_io(
    contract: Contract, inputs: dict[str, TensorSpec], outputs: dict[str, TensorSpec], source: str
) -> None:
    """UserError naming the first place where the metadata and the graph/engine disagree."""
    expected = [(contract.image, inputs, "input")]
    if contract.flow is not None:
        expected.append((contract.flow, inputs, "input"))
    if contract.reads_states:
        expected += [(TensorSpec(s.input, s.shape, s.dtype), inputs, "input") for s in contract.states]
    expected += [(TensorSpec(s.output, s.shape, s.dtype), outputs, "output") for s in contract.states]
    expected += [(t, outputs, "output") for t in (contract.logits, contract.labels) if t is not None]
    for spec, actual, kind in expected:
        found = actual.get(spec.name)
        if found is None:
            raise UserError(
                f"metadata promises {kind} '{spec.name}' but the file has none ({kind}s: {', '.join(actual)})", source
            )
        if tuple(found.shape) != tuple(spec.shape) or found.dtype != spec.dtype:
            raise UserError(
                f"{kind} '{spec.name}' is {list(spec.shape)} {spec.dtype} in the metadata "
                f"but {list(found.shape)} {found.dtype} in the file",
                source,
            )
    read = {s.input for s in contract.states} if contract.reads_states else set()
    extra_states = [n for n in inputs if STATE_IN.match(n) and n not in read]
    if extra_states:
        raise UserError(f"inputs {extra_states} are not state pairs of the metadata", source)
    if contract.role not in ROLES:
        raise UserError(f"graph role {contract.role!r} is not one of {', '.join(ROLES)}", source)
    if contract.role == "update":
        check_schedule(contract, source)


def check_keyframe_interval(every: object, source: str) -> None:
    """UserError unless `every` is a keyframe interval: a whole number of frames, at least 1."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise UserError(f"keyframe interval {every!r} is below 1 (or not a whole number of frames)", source)


def check_schedule(contract: Contract, source: str) -> None:
    """UserError unless an update graph names its keyframe graph, an interval >= 1, and a flow input (if any)
    of [N, 2, h, w] on the grid of its first state."""
    keyframe = contract.schedule.get("keyframe_graph")
    check_keyframe_interval(contract.schedule.get("keyframe_every"), source)
    if not isinstance(keyframe, str) or not keyframe or "/" in keyframe or "\\" in keyframe:
        raise UserError(f"metadata names no keyframe graph file next to this one ({keyframe!r})", source)
    flow = contract.flow
    if flow is not None and contract.states:
        grid = contract.states[0].shape[-2:]
        if tuple(flow.shape) != (contract.batch, 2, *grid):
            raise UserError(
                f"flow input is {list(flow.shape)}, not [{contract.batch}, 2, {grid[0]}, {grid[1]}] "
                "(dx, dy on the state's grid)",
                source,
            )


def read_onnx_contract(path: str | os.PathLike[str]) -> Contract:
    """Load an ONNX file, check it, and return its contract (metadata validated against the graph)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError("ONNX file not found", path)
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as err:  # onnx raises DecodeError, ValidationError, ...
        raise UserError(f"not a valid ONNX model: {str(err).strip().splitlines()[0][:200]}", path) from None
    return contract_of_model(model, str(path))


def contract_of_model(model: Any, source: str) -> Contract:
    inputs, outputs = graph_io(model)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        return contract_from_io(inputs, outputs, source)
    try:
        contract = Contract.from_json(props[METADATA_KEY])
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"unreadable '{METADATA_KEY}' metadata: {err}", source) from None
    check_against_io(contract, inputs, outputs, source)
    return contract


def set_metadata(model: Any, contract: Contract) -> None:
    """Write `contract` into the metadata_props of an onnx.ModelProto (replacing an older one)."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, contract.to_json()


def check_keyframe_pair(update: Contract, keyframe: Contract, source: str) -> None:
    """UserError naming `source` (the keyframe graph or engine) unless it is the keyframe graph of `update`:
    the same model, image, classes and precision, and every state the update graph reads, written alike."""
    if keyframe.role != "keyframe":
        raise UserError(f"not a keyframe graph (role {keyframe.role!r}) but named as {update.model}'s", source)
    pairs = [
        ("model", update.model, keyframe.model),
        ("image", update.image, keyframe.image),
        ("classes", update.num_classes, keyframe.num_classes),
        ("precision", update.precision, keyframe.precision),
    ]
    pairs.append(("state count", len(update.states), len(keyframe.states)))
    states = zip(update.states, keyframe.states, strict=False)  # counts compared first
    pairs += [(f"state {u.output}", (u.shape, u.dtype), (k.shape, k.dtype)) for u, k in states]
    for what, want, got in pairs:
        if want != got:
            raise UserError(
                f"keyframe graph disagrees with the update graph on {what}: {got} here, {want} there", source
            )
