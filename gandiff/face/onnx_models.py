"""Loading ONNX face models for onnxruntime: clean graphs, one session per model, CUDA when present.

The graph is edited before onnxruntime sees it: unused graph inputs of the OpenCV-Zoo int8 builds are
dropped, a fixed batch dimension of 1 becomes symbolic so one session runs whole batches, and on the CPU
``PRelu`` becomes the bit-exact ``Max(x, slope * x)`` (onnxruntime's CPU PRelu took half of SFace's time).
A missing, non-ONNX or wrong-kind file raises :class:`ModelFileError` naming the file and the config key;
:func:`load_torch_weights` is the one weights-only ``torch.load`` of the face and identity models.

Design: docs/design.md#onnx-model-loading.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.errors import UserError

log = logging.getLogger(__name__)


class ModelFileError(UserError, ValueError):
    """A model file that is missing or not the model a config key asks for (one line, for the user)."""


def check_model_file(path: str | os.PathLike | None, config_key: str, what: str) -> Path:
    """``path`` as a Path, or ModelFileError naming ``config_key`` when it is unset or missing."""
    if path is None or str(path) in ("", "???"):
        raise ModelFileError(f"{config_key} is not set: give the path of the {what}")
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise ModelFileError(f"{config_key}={str(path)!r}: no such file (expected the {what})")
    return p


def load_torch_weights(path: Path, config_key: str, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (no pickled code runs), or ModelFileError naming the
    file, ``config_key`` and what was expected when the file is not a weights-only torch file."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a file that is not a checkpoint
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise ModelFileError(f"{config_key}={str(path)!r}: not a weights-only torch file (torch.load(weights_only=True) "
                             f"raised {type(e).__name__}{': ' + first if first else ''}); expected the {what}") from None


def load_onnx_model(path: str | os.PathLike | None, config_key: str, what: str, dynamic_batch: bool = False,
                    dynamic_spatial: bool = False):
    """Read an ONNX file, drop unused / initializer graph inputs, optionally make batch / H, W symbolic."""
    import onnx
    from google.protobuf.message import DecodeError

    p = check_model_file(path, config_key, what)
    try:
        model = onnx.load(str(p))
    except (DecodeError, ValueError, OSError, RuntimeError) as e:
        raise ModelFileError(f"{config_key}={str(p)!r}: not an ONNX model ({type(e).__name__}); expected the {what}") \
            from None
    if len(model.graph.node) == 0:
        raise ModelFileError(f"{config_key}={str(p)!r}: ONNX file holds no graph; expected the {what}")
    drop_unused_inputs(model)
    fold_constant_dequantize(model)
    if dynamic_batch or dynamic_spatial:
        make_batch_dynamic(model, spatial=dynamic_spatial)
    return model


def drop_unused_inputs(model) -> int:
    """Remove graph inputs no node reads, and inputs that are initializers (IR >= 4 allows that).

    Returns how many were removed. The graph computes the same function afterwards; only its
    declared signature shrinks to the real data inputs.
    """
    graph = model.graph
    consumed = {name for node in graph.node for name in node.input}
    consumed |= {o.name for o in graph.output}
    initializers = {i.name for i in graph.initializer}
    keep = [i for i in graph.input if i.name in consumed and i.name not in initializers]
    removed = len(graph.input) - len(keep)
    if removed:
        model.ir_version = max(model.ir_version, 4)  # initializers outside graph.input need IR 4
        del graph.input[:]
        graph.input.extend(keep)
        log.debug("dropped %d unused or initializer graph inputs", removed)
    return removed


def fold_constant_dequantize(model) -> int:
    """Replace every ``DequantizeLinear`` whose inputs are all initializers by its float32 result.

    The OpenCV-Zoo ``int8bq`` builds store weights as int8 blocks (``block_size`` along an axis).
    Some of those nodes hold a single block (scale shape ``(1,)`` or ``(1, 1)``), which is legal ONNX
    but which onnxruntime misreads as per-tensor or per-axis quantisation and refuses to run.
    Dequantising the weights here, with the operator's own formula ``(x - zero_point) * scale`` (scale
    repeated ``block_size`` times along ``axis``), gives onnxruntime an ordinary float graph that
    computes the same values (onnxruntime would constant-fold these nodes itself when it could load
    them). Returns how many nodes were folded.
    """
    from onnx import numpy_helper

    graph = model.graph
    arrays = {init.name: init for init in graph.initializer}
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(name in arrays for name in node.input if name):
            keep.append(node)
            continue
        attrs = {a.name: a.i for a in node.attribute}
        x = numpy_helper.to_array(arrays[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(arrays[node.input[1]]).astype(np.float32)
        zero = (numpy_helper.to_array(arrays[node.input[2]]).astype(np.float32)
                if len(node.input) > 2 and node.input[2] else np.zeros_like(scale))
        axis = attrs.get("axis", 1) % max(x.ndim, 1)
        block = attrs.get("block_size", 0)
        if scale.size == 1:
            scale, zero = scale.reshape(()), zero.reshape(())
        elif block:  # blocked: each scale covers `block` consecutive elements along `axis`
            scale = np.repeat(scale, block, axis=axis).take(range(x.shape[axis]), axis=axis)
            zero = np.repeat(zero, block, axis=axis).take(range(x.shape[axis]), axis=axis)
        else:  # per-axis: a 1-D scale along `axis`
            shape = [1] * x.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        graph.initializer.append(numpy_helper.from_array(((x - zero) * scale).astype(np.float32), node.output[0]))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        kept_inits = [init for init in graph.initializer if init.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept_inits)
    return folded


def make_batch_dynamic(model, spatial: bool = False) -> None:
    """Symbolic batch axis ``N`` on every input and output; literal batch-1 reshapes become ``0``.

    ``spatial=True`` also makes the input's H and W symbolic (and every output axis, whose sizes then
    follow H and W): for fully convolutional detectors exported at one fixed size.
    Only ``Reshape`` targets of the form ``[1, ..., -1, ...]`` are rewritten: a ``-1`` marks an
    activation reshape (weight reshapes in quantised graphs never contain one), and ``0`` copies the
    incoming batch size. Intermediate ``value_info`` shapes are cleared because they were recorded at
    batch 1; onnxruntime infers them again.
    """
    from onnx import numpy_helper

    graph = model.graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        names = ("N", "C", "H", "W") if spatial and len(dims) == 4 else ("N",)
        for i, name in enumerate(names):
            if name != "C":
                dims[i].ClearField("dim_value")
                dims[i].dim_param = name
    for value in graph.output:
        dims = value.type.tensor_type.shape.dim
        for i in range(len(dims) if spatial else min(1, len(dims))):
            if i == 0 or i < len(dims) - 1:  # keep the last (channel-like) axis of spatial outputs fixed
                dims[i].ClearField("dim_value")
                dims[i].dim_param = "N" if i == 0 else f"{value.name}_d{i}"
    del graph.value_info[:]
    shape_inputs = {node.input[1] for node in graph.node if node.op_type == "Reshape" and len(node.input) > 1}
    for init in graph.initializer:
        if init.name in shape_inputs:
            target = numpy_helper.to_array(init)
            if target.ndim == 1 and target.size >= 2 and target[0] == 1 and (target == -1).any():
                fixed = target.copy()
                fixed[0] = 0
                init.CopyFrom(numpy_helper.from_array(fixed.astype(target.dtype), init.name))
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in shape_inputs:
            for attr in node.attribute:
                if attr.name == "value":
                    target = numpy_helper.to_array(attr.t)
                    if target.ndim == 1 and target.size >= 2 and target[0] == 1 and (target == -1).any():
                        fixed = target.copy()
                        fixed[0] = 0
                        attr.t.CopyFrom(numpy_helper.from_array(fixed.astype(target.dtype)))


def _constant_values(name: str, initializers: dict, producers: dict) -> np.ndarray | None:
    """The values of a graph tensor that is an initializer, a Constant, or a reshape of one (shape ignored)."""
    from onnx import numpy_helper

    for _ in range(8):  # follow Reshape / Unsqueeze / Identity chains back to the stored tensor
        if name in initializers:
            return numpy_helper.to_array(initializers[name])
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            return numpy_helper.to_array(attr.t) if attr is not None else None
        if node.op_type not in ("Reshape", "Unsqueeze", "Identity", "Squeeze", "Flatten"):
            return None
        name = node.input[0]
    return None


def rewrite_prelu_for_cpu(model) -> int:
    """Replace ``PRelu(x, slope)`` by ``Max(x, slope * x)`` where every slope is <= 1 (``Min`` where every
    slope is >= 1); returns how many nodes were rewritten.

    Why: onnxruntime's CPU PRelu kernel is a generic broadcasting loop; in SFace (MobileFaceNet, 27
    PReLUs) it took 55 % of the run time, more than all convolutions (profiled with onnxruntime 1.32).
    ``Mul`` by a per-channel constant and a same-shape ``Max`` run on vectorised paths. The result is
    bit-identical: for ``slope <= 1``, ``max(x, slope * x)`` is ``x`` when ``x >= 0`` and ``slope * x``
    (the same float product PRelu computes) when ``x < 0``; symmetrically with ``min`` for ``slope >= 1``.
    Layers whose slopes straddle 1, or whose slope is not a constant, keep their PRelu.
    """
    from onnx import helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    nodes, rewritten = [], 0
    for node in graph.node:
        slope = _constant_values(node.input[1], initializers, producers) if node.op_type == "PRelu" else None
        if slope is None or not np.isfinite(slope).all() or not ((slope <= 1).all() or (slope >= 1).all()):
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        scaled = f"{y}__slope_x"
        base = node.name or y  # node names are optional in ONNX; output names are unique
        nodes.append(helper.make_node("Mul", [x, node.input[1]], [scaled], name=f"{base}__mul"))
        nodes.append(helper.make_node("Max" if (slope <= 1).all() else "Min", [x, scaled], [y],
                                      name=f"{base}__select"))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        log.debug("rewrote %d PRelu nodes as Mul + Max/Min for the CPU", rewritten)
    return rewritten


def providers_for(device: str = "auto") -> list[str]:
    """onnxruntime execution providers: CUDA first when available and not ``device=cpu``."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" not in available:
        log.warning("device=%s but onnxruntime has no CUDA provider (install onnxruntime-gpu): running on CPU",
                    device)
    return ["CPUExecutionProvider"]


def create_session(model, device: str = "auto", threads: int | None = None):
    """One ``InferenceSession`` from an in-memory ModelProto (or bytes), on the best provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings about unused initializers are noise here
    if threads:  # intra-op threads do the work; the default sequential mode uses no inter-op pool
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # No busy-waiting between ops: on shared cluster nodes (and next to a PyTorch data loader) spinning
    # threads steal the cores the other work needs; the cost on an idle machine is small.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    payload = model if isinstance(model, bytes) else model.SerializeToString()
    providers = providers_for(device)
    if providers[0] == "CUDAExecutionProvider":
        index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ort.InferenceSession(payload, sess_options=options, providers=providers)


class OnnxModel:
    """An ONNX graph with one image input, loaded once; checks its signature against what the caller needs.

    ``input_channels``/``input_hw`` (None = any) and ``num_outputs`` describe the expected kind; a
    mismatch is a ModelFileError naming the file and config key.
    """

    def __init__(self, path: str | os.PathLike | None, config_key: str, what: str, *, device: str = "auto",
                 dynamic_batch: bool = True, dynamic_spatial: bool = False, input_channels: int | None = 3,
                 input_hw: tuple[int, int] | None = None, num_outputs: int | Sequence[int] | None = None,
                 output_names: Sequence[str] | None = None, threads: int | None = None):
        self.path = check_model_file(path, config_key, what)
        self.config_key = config_key
        model = load_onnx_model(self.path, config_key, what, dynamic_batch=dynamic_batch,
                                dynamic_spatial=dynamic_spatial)
        where = f"{config_key}={str(self.path)!r}"
        inputs = list(model.graph.input)
        if len(inputs) != 1:
            raise ModelFileError(f"{where}: graph has {len(inputs)} data inputs "
                                 f"({', '.join(i.name for i in inputs)}); expected one image input for the {what}")
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inputs[0].type.tensor_type.shape.dim]
        if len(dims) != 4 or (input_channels is not None and dims[1] != input_channels):
            raise ModelFileError(f"{where}: input {inputs[0].name!r} has shape {dims}; expected "
                                 f"[N, {input_channels}, H, W] for the {what}")
        if input_hw is not None and tuple(dims[2:]) != tuple(input_hw):
            raise ModelFileError(f"{where}: input is {dims[2]}x{dims[3]}; expected {input_hw[0]}x{input_hw[1]} "
                                 f"for the {what}")
        outs = [o.name for o in model.graph.output]
        if num_outputs is not None:
            allowed = (num_outputs,) if isinstance(num_outputs, int) else tuple(num_outputs)
            if len(outs) not in allowed:
                raise ModelFileError(f"{where}: graph has {len(outs)} outputs; expected "
                                     f"{' or '.join(map(str, allowed))} for the {what}")
        if output_names is not None and not set(output_names) <= set(outs):
            missing = sorted(set(output_names) - set(outs))
            raise ModelFileError(f"{where}: outputs {missing} missing (graph has {outs}); not the {what}")
        self.input_name = inputs[0].name
        self.input_shape = dims
        self.output_names = outs
        if providers_for(device)[0] == "CPUExecutionProvider":
            rewrite_prelu_for_cpu(model)  # a large speed-up on the CPU, bit-exact; CUDA's PRelu is fast as it is
        try:
            self.session = create_session(model, device=device, threads=threads)
        except Exception as e:  # noqa: BLE001  (onnxruntime raises its own Fail/InvalidGraph types)
            raise ModelFileError(f"{where}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
        self.providers = self.session.get_providers()

    def run(self, batch: np.ndarray, names: Sequence[str] | None = None) -> list[np.ndarray]:
        """``batch`` (N, C, H, W) float32 -> the outputs in ``names`` order (all outputs by default)."""
        return self.session.run(list(names) if names else self.output_names,
                                {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
