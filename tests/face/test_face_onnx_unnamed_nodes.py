"""ONNX node names are optional: a recognizer whose PRelu nodes have none loads (the CPU PRelu rewrite names
its nodes after their outputs) and computes what PRelu computes."""

from __future__ import annotations

import numpy as np


def test_unnamed_prelu_nodes_load_and_compute_prelu(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from gandiff.face.embedders import OnnxEmbedder

    rng = np.random.default_rng(0)
    slope = np.full((3, 1, 1), 0.25, np.float32)
    w = rng.normal(size=(3 * 112 * 112, 4)).astype(np.float32) / 100
    nodes = [helper.make_node("PRelu", ["input.1", "slope"], ["a"]),  # no name=: both nodes are unnamed
             helper.make_node("PRelu", ["a", "slope"], ["b"]),
             helper.make_node("Flatten", ["b"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["683"])]
    graph = helper.make_graph(nodes, "unnamed", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                                               ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(slope, "slope"), numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "r.onnx"))
    emb = OnnxEmbedder(tmp_path / "r.onnx", mean=127.5, std=127.5, device="cpu")
    crops = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    x = (crops.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5
    x = np.where(x >= 0, x, 0.25 * x)
    x = np.where(x >= 0, x, 0.25 * x)
    want = x.reshape(2, -1) @ w
    got = emb.model.run(np.ascontiguousarray((crops.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
