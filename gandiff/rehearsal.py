"""Stand-ins for the real models, random weights in the exact layouts people download (``make rehearse``).

``build_standins(out, size="real")`` writes, once, into ``out``: Stable Diffusion 1.5 as on the hub (``sd15/``,
float32, and ``sd15-fp16/``, fp16 variant files only), NVlabs StyleGAN3-R and StyleGAN2 FFHQ pickles, a
buffalo_l-style pack (SCRFD-like ``det_10g.onnx``, IResNet-50 ``w600k_r50.onnx``), FairFace's ResNet-34 ``.pt``,
verification ``.bin`` files, an IJB-C layout and ``standins.json``. ``size="tiny"`` builds the same files small
(a test loads each through the real loaders). Random weights prove shapes, formats, memory and speed, not
quality; each part is built under a temporary name and renamed, so an interrupted build resumes.
One module: one folder layout (``standin_paths``, ``standins.json``) whose builders share the resumable rename
(``_building``) and the seed plan. Design: docs/design.md#the-rehearsal-stand-ins.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import shutil
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SIZES = ("real", "tiny")
VERIFICATION_NAMES = ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw")
SG3_PKL = "stylegan3-r-ffhq-1024x1024.pkl"
SG2_PKL = "stylegan2-ffhq-1024x1024.pkl"
FAIRFACE_PT = "res34_fair_align_multi_7_20190809.pt"

# NVlabs stylegan3 train.py for --cfg=stylegan3-r --gpus=8 --batch=32 on FFHQ 1024 (the released pickle):
# cbase 32768 and cmax 512 doubled for config R, 1x1 convs, radial filters, 2 mapping layers, magnitude EMA
# beta 0.5 ** (batch / 20k). num_fp16_res / conv_clamp are only set with --fp32, so the class defaults hold.
SG3_R_FFHQ_1024 = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                       mapping_kwargs=dict(num_layers=2), channel_base=65536, channel_max=1024,
                       magnitude_ema_beta=0.5 ** (32 / 20000), conv_kernel=1, use_radial_filters=True)
# --cfg=stylegan2 (stylegan2-ffhq-1024x1024.pkl of the stylegan3 release): 8 mapping layers, cbase 32768, cmax 512.
SG2_FFHQ_1024 = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                     mapping_kwargs=dict(num_layers=8), channel_base=32768, channel_max=512,
                     fused_modconv_default="inference_only")
TINY_SG3_R = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  channel_base=256, channel_max=16, num_layers=4, num_critical=2, margin_size=2,
                  magnitude_ema_beta=0.5 ** (32 / 20000), conv_kernel=1, use_radial_filters=True)
TINY_SG2 = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                channel_base=128, channel_max=16, fused_modconv_default="inference_only")

# The model_index.json of stable-diffusion-v1-5/stable-diffusion-v1-5 (its class names, in its order).
SD15_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "requires_safety_checker": True,
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


# --------------------------------------------------------------------------------------------- parts


@contextlib.contextmanager
def _building(final: Path) -> Iterator[Path]:
    """A temporary sibling of ``final``, renamed onto it when the body finishes."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    try:
        yield tmp
        if final.is_dir():  # a part rebuilt after an interrupted build (its sibling was renamed, it was not)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _safety_checker_config(size: str) -> Any:
    """CLIP ViT-L/14 (the safety checker of SD 1.5: a 1024-wide, 24-layer vision tower, 768-d projection)."""
    from transformers import CLIPConfig

    if size == "real":
        text = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
        vision = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                      patch_size=14, image_size=224)
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)
    text = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, patch_size=14,
                  image_size=224)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def build_sd15(full_dir: Path, fp16_dir: Path, size: str = "real", seed: int = 0) -> tuple[Path, Path]:
    """Two SD 1.5 folders in the hub's layout: float32 files in ``full_dir``, fp16 variant files only in ``fp16_dir``.

    Modules are built one at a time (seeded by name) and saved twice, so peak memory is one module in float32.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    from gandiff.diffusion.components import SD_SCHEDULE, build_clip_tokenizer, sd15_configs, tiny_configs

    configs = sd15_configs() if size == "real" else tiny_configs()
    builders: dict[str, Callable[[], Any]] = {
        "unet": lambda: UNet2DConditionModel(**configs["unet"]),
        "vae": lambda: AutoencoderKL(**configs["vae"]),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])),
        "safety_checker": lambda: StableDiffusionSafetyChecker(_safety_checker_config(size)),
    }
    with _building(full_dir) as a, _building(fp16_dir) as b:
        for n, (name, make) in enumerate(builders.items()):
            torch.manual_seed(seed * 100 + n)
            module = make().eval()
            module.save_pretrained(a / name, safe_serialization=True)
            module.half().save_pretrained(b / name, safe_serialization=True, variant="fp16")
            del module
        for folder in (a, b):
            build_clip_tokenizer().save_pretrained(folder / "tokenizer")
            PNDMScheduler.from_config({**SD_SCHEDULE, "skip_prk_steps": True}).save_pretrained(folder / "scheduler")
            CLIPImageProcessor().save_pretrained(folder / "feature_extractor")  # OpenAI CLIP's 224 preprocessing
            from diffusers import __version__ as diffusers_version

            index = {"_class_name": SD15_MODEL_INDEX["_class_name"], "_diffusers_version": diffusers_version,
                     **{k: v for k, v in SD15_MODEL_INDEX.items() if k != "_class_name"}}
            (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
            (folder / "README.md").write_text(
                "# Stable Diffusion 1.5 stand-in (gandiff rehearsal)\n\nRandom weights in the layout of "
                "stable-diffusion-v1-5/stable-diffusion-v1-5" + (" (fp16 variant files only)" if folder == b else "")
                + f", size={size}, seed {seed}. It renders noise. Tokenizer: OpenAI CLIP BPE (MIT).\n")
    return full_dir, fp16_dir


# --------------------------------------------------------------------------------------------- NVlabs pickles


@contextlib.contextmanager
def _nvlabs_names() -> Iterator[tuple[Callable, type]]:
    """``torch_utils.persistence._reconstruct_persistent_obj`` and ``dnnlib.util.EasyDict`` as pickle sees them.

    Only their names reach the stream; the function raises if anything ever calls it.
    """
    def _reconstruct_persistent_obj(meta):  # pragma: no cover - must never run
        raise RuntimeError("the NVlabs reconstruct stand-in was called")

    class EasyDict(dict):
        pass

    mods = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    mods["dnnlib.util"].EasyDict = EasyDict
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        yield _reconstruct_persistent_obj, EasyDict
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def nvlabs_pickle_bytes(G: Any, module_src: str | None = None, extra: dict | None = None) -> bytes:
    """``G`` pickled as NVlabs' ``training_loop.py`` snapshots are: ``{G, D, G_ema, augment_pipe,
    training_set_kwargs}`` (``extra`` replaces entries), every module a persistent-class record (``type``,
    ``version`` 6, ``module_src``, ``class_name``, ``state`` = its ``__dict__`` plus ``_init_args`` /
    ``_init_kwargs`` as EasyDicts, as ``train.py`` passes them)."""
    import torch

    with _nvlabs_names() as (reconstruct, EasyDict):
        def easy(obj):
            return EasyDict({k: easy(v) for k, v in obj.items()}) if isinstance(obj, dict) else obj

        class Pickler(pickle.Pickler):
            def reducer_override(self, obj):
                if isinstance(obj, torch.nn.Module):
                    state = dict(obj.__dict__)
                    kwargs = state.pop("init_kwargs", None) if obj is G else {}
                    state["_init_args"] = ()
                    state["_init_kwargs"] = easy(dict(kwargs or {}))
                    src = (module_src if module_src is not None
                           else f"# networks source of {type(obj).__module__} (not included in the stand-in)\n")
                    return reconstruct, (dict(type="class", version=6, module_src=src,
                                              class_name=type(obj).__name__, state=state),)
                return NotImplemented

        snapshot = {"G": G, "D": None, "G_ema": G, "augment_pipe": None,
                    "training_set_kwargs": EasyDict(resolution=G.img_resolution, use_labels=False)}
        snapshot.update(extra or {})
        buf = io.BytesIO()
        Pickler(buf, protocol=4).dump(snapshot)
    return buf.getvalue()


def nvlabs_pickle(G: Any, path: Path) -> Path:
    """Write ``G`` to ``path`` as an NVlabs snapshot (:func:`nvlabs_pickle_bytes`)."""
    path.write_bytes(nvlabs_pickle_bytes(G))
    return path


def build_stylegan(path: Path, arch: str, kwargs: dict[str, Any], seed: int = 0) -> Path:
    """A randomly initialised generator with ``kwargs`` (trained-looking w_avg and magnitude EMAs) as a ``.pkl``."""
    import torch

    from gandiff.identity.stylegan import build_generator

    torch.manual_seed(seed)
    G = build_generator(arch, kwargs)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        for name, b in G.named_buffers():
            if name.endswith("magnitude_ema"):
                b.fill_(1.0 + torch.rand([]).item())
    with _building(path) as tmp:
        nvlabs_pickle(G, tmp)
    return path


# --------------------------------------------------------------------------------------------- ONNX graphs


class _Graph:
    """A tiny ONNX graph writer: convolution nets with random (He-initialised) weights."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value: np.ndarray, base: str = "w") -> str:
        from onnx import numpy_helper

        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{len(self.nodes)}", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, std: float | None = None,
             bias: np.ndarray | float | None = None) -> str:
        std = np.sqrt(2.0 / (cin * k * k)) if std is None else std
        w = self.const((self.rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32))
        b = self.const(np.broadcast_to(np.asarray(0.0 if bias is None else bias, np.float32), (cout,)).copy())
        return self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    def bn(self, x: str, c: int) -> str:
        ones, zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
        return self.op("BatchNormalization", [x, self.const(ones), self.const(zeros), self.const(zeros),
                                              self.const(ones)], epsilon=2e-5)

    def prelu(self, x: str, c: int, spatial: bool = True) -> str:
        return self.op("PRelu", [x, self.const(np.full((c, 1, 1) if spatial else (c,), 0.25, np.float32))])

    def save(self, path: Path, name: str, inputs: list[Any], outputs: list[Any]) -> Path:
        import onnx
        from onnx import helper

        model = helper.make_model(helper.make_graph(self.nodes, name, inputs, outputs, self.inits),
                                  opset_imports=[helper.make_opsetid("", 13)], producer_name="gandiff-rehearsal")
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return path


def build_iresnet_onnx(path: Path, size: str = "real", seed: int = 1) -> Path:
    """insightface's IResNet-50 (``w600k_r50.onnx``): input ``input.1`` (N, 3, 112, 112), output ``683`` (N, 512).

    Layers [3, 4, 14, 3] of IBasicBlocks (BN, conv3x3, BN, PReLU, conv3x3/stride, BN, + shortcut), 64..512 wide,
    then BN, flatten, FC 512*7*7 -> 512, BN (insightface ``iresnet.py``). ``tiny``: one block per stage, 8..64 wide.
    """
    from onnx import TensorProto, helper

    layers, widths, dim = ((3, 4, 14, 3), (64, 128, 256, 512), 512) if size == "real" else ((1, 1, 1, 1), (8, 16, 32, 64), 32)
    g = _Graph(seed)
    x = g.prelu(g.bn(g.conv("input.1", 3, widths[0]), widths[0]), widths[0])
    cin = widths[0]
    for n_blocks, planes in zip(layers, widths):
        for b in range(n_blocks):
            stride = 2 if b == 0 else 1
            y = g.bn(x, cin)
            y = g.prelu(g.bn(g.conv(y, cin, planes), planes), planes)
            y = g.bn(g.conv(y, planes, planes, stride=stride), planes)
            short = x if stride == 1 and cin == planes else g.bn(g.conv(x, cin, planes, k=1, stride=stride), planes)
            x, cin = g.op("Add", [y, short]), planes
    x = g.op("Flatten", [g.bn(x, cin)], axis=1)
    fc = g.const((g.rng.standard_normal((cin * 7 * 7, dim)) * np.sqrt(1.0 / (cin * 49))).astype(np.float32))
    x = g.op("Add", [g.op("MatMul", [x, fc]), g.const(np.zeros(dim, np.float32))])
    x = g.op("BatchNormalization", [x, g.const(np.ones(dim, np.float32)), g.const(np.zeros(dim, np.float32)),
                                    g.const(np.zeros(dim, np.float32)), g.const(np.ones(dim, np.float32))],
             out="683", epsilon=2e-5)
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])]
    outputs = [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", dim])]
    with _building(path) as tmp:
        g.save(tmp, "iresnet50" if size == "real" else "iresnet_tiny", inputs, outputs)
    return path


# det_10g.onnx's output names, in graph order: scores, boxes, keypoints, each for strides 8, 16, 32.
SCRFD_OUTPUTS = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
# Five landmark offsets (eyes, nose, mouth corners) of a frontal face, in strides from the anchor centre.
_FACE_KPS = np.array([-0.7, -0.5, 0.7, -0.5, 0.0, 0.2, -0.55, 0.9, 0.55, 0.9], np.float32)


def build_scrfd_onnx(path: Path, size: str = "real", seed: int = 2) -> Path:
    """An SCRFD-like detector in det_10g's layout: input ``input.1`` (1, 3, ?, ?), nine outputs
    ``(cells*2, 1|4|10)`` (scores after a sigmoid, box distances, 5-point offsets) at strides 8, 16, 32.

    A plain ReLU conv backbone (~10 GMACs at 640x640, det_10g's budget) and a two-conv head per stride. Head
    weights are normal(std 0.01) as in SCRFD's init; the biases make every anchor propose a face-shaped box
    (distances 2 strides, frontal 5 points) so that random weights still give valid geometry downstream.
    """
    from onnx import TensorProto, helper

    wide = 1 if size == "real" else 8
    g = _Graph(seed)
    # stride 2, 4: stem; then one stage per stride 8 / 16 / 32 (a stride-2 conv and `depth` 3x3 convs)
    x = g.op("Relu", [g.conv("input.1", 3, 32 // wide, stride=2)])
    x = g.op("Relu", [g.conv(x, 32 // wide, 64 // wide, stride=2)])
    for _ in range(2):
        x = g.op("Relu", [g.conv(x, 64 // wide, 64 // wide)])
    cin, feats = 64 // wide, []
    for cout, depth in ((128 // wide, 3), (256 // wide, 3), (512 // wide, 2)):
        x = g.op("Relu", [g.conv(x, cin, cout, stride=2)])
        for _ in range(depth):
            x = g.op("Relu", [g.conv(x, cout, cout)])
        feats.append((x, cout))
        cin = cout
    head = 64 // wide
    outs: dict[str, list[str]] = {"score": [], "box": [], "kps": []}
    for f, c in feats:
        h = g.op("Relu", [g.conv(f, c, head, k=1)])
        for _ in range(2):
            h = g.op("Relu", [g.conv(h, head, head)])
        for kind, ch, bias in (("score", 1, 0.0), ("box", 4, 2.0), ("kps", 10, np.tile(_FACE_KPS, 1))):
            y = g.conv(h, head, 2 * ch, std=0.01, bias=np.tile(np.broadcast_to(np.asarray(bias, np.float32), (ch,)), 2))
            if kind == "score":
                y = g.op("Sigmoid", [y])
            y = g.op("Transpose", [y], perm=[0, 2, 3, 1])  # (1, H, W, 2*ch): the two anchors of a cell adjacent
            outs[kind].append(g.op("Reshape", [y, g.const(np.array([-1, ch], np.int64), "shape")]))
    for name, out in zip(SCRFD_OUTPUTS, outs["score"] + outs["box"] + outs["kps"]):
        g.op("Identity", [out], out=name)
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [f"n{n}", c])
               for n, c in zip(SCRFD_OUTPUTS, (1, 1, 1, 4, 4, 4, 10, 10, 10))]
    with _building(path) as tmp:
        g.save(tmp, "scrfd_10g_like" if size == "real" else "scrfd_tiny", inputs, outputs)
    return path


def build_buffalo_l(folder: Path, size: str = "real", seed: int = 0) -> Path:
    """The two files of insightface's buffalo_l that gandiff reads: ``det_10g.onnx`` and ``w600k_r50.onnx``."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "det_10g.onnx").exists():
        build_scrfd_onnx(folder / "det_10g.onnx", size, seed + 2)
    if not (folder / "w600k_r50.onnx").exists():
        build_iresnet_onnx(folder / "w600k_r50.onnx", size, seed + 1)
    return folder


# --------------------------------------------------------------------------------------------- other files


def build_fairface(path: Path, seed: int = 3) -> Path:
    """FairFace's checkpoint format: a torchvision ``resnet34`` state dict with an 18-output ``fc`` (always real size)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet34(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, 18)
    with _building(path) as tmp:
        with open(tmp, "wb") as f:  # through a file object: the archive is not named after the temporary path
            torch.save(model.state_dict(), f)
    return path


def _face_like(rng: np.random.Generator, n: int, size: int = 112) -> np.ndarray:
    """``n`` smooth random RGB images (N, size, size, 3) uint8: blurred noise, JPEG/PNG-friendly."""
    import cv2

    small = rng.integers(0, 256, (n, 14, 14, 3), dtype=np.uint8)
    return np.stack([cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC) for s in small])


def build_verification(folder: Path, pairs: int, seed: int = 4) -> Path:
    """``<name>.bin`` for lfw, cfp_fp, agedb_30, calfw, cplfw: ``pairs`` pairs each, half of them same (insightface layout)."""
    from gandiff.evaluation.verification import write_bin

    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(VERIFICATION_NAMES):
        if (folder / f"{name}.bin").exists():
            continue
        rng = np.random.default_rng(seed * 10 + k)
        write_bin(folder / f"{name}.bin", _face_like(rng, 2 * pairs), [i % 2 == 0 for i in range(pairs)],
                  format=".jpg")
    return folder


def build_ijbc(root: Path, templates: int, seed: int = 5) -> Path:
    """insightface's IJB-C layout: ``meta/ijbc_face_tid_mid.txt``, ``ijbc_template_pair_label.txt``,
    ``ijbc_name_5pts_score.txt`` and ``loose_crop/<n>.jpg`` (2 images per template, 2 subjects' templates per pair)."""
    import cv2

    from gandiff.face.align import ARCFACE_TEMPLATE

    rng = np.random.default_rng(seed)
    with _building(root) as tmp:
        (tmp / "meta").mkdir(parents=True)
        (tmp / "loose_crop").mkdir()
        tid_mid, lmk = [], []
        images = _face_like(rng, 2 * templates, 160)
        for t in range(templates):
            for j in range(2):
                n = 2 * t + j + 1
                cv2.imwrite(str(tmp / "loose_crop" / f"{n}.jpg"), cv2.cvtColor(images[n - 1], cv2.COLOR_RGB2BGR))
                tid_mid.append(f"{n}.jpg {t + 1} {2 * t + j + 1}")
                pts = (np.asarray(ARCFACE_TEMPLATE, np.float32) + 24 + rng.normal(0, 1, (5, 2))).reshape(-1)
                lmk.append(f"{n}.jpg " + " ".join(f"{v:.3f}" for v in pts) + f" {rng.uniform(0.6, 1.0):.4f}")
        subject = [t // 2 for t in range(templates)]  # two templates per subject
        pairs = [f"{a + 1} {b + 1} {int(subject[a] == subject[b])}"
                 for a in range(templates) for b in range(a + 1, templates)]
        (tmp / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
        (tmp / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(lmk) + "\n")
        (tmp / "meta" / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    return root


# --------------------------------------------------------------------------------------------- all


def standin_paths(out: str | os.PathLike) -> dict[str, Path]:
    out = Path(out)
    return {
        "sd15": out / "sd15",
        "sd15_fp16": out / "sd15-fp16",
        "stylegan3": out / SG3_PKL,
        "stylegan2": out / SG2_PKL,
        "buffalo_l": out / "buffalo_l",
        "fairface": out / FAIRFACE_PT,
        "verification": out / "verification",
        "ijbc": out / "IJBC",
    }


def build_standins(out: str | os.PathLike, size: str = "real", seed: int = 0, bin_pairs: int = 20,
                   ijb_templates: int = 8, parts: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Build every stand-in (or ``parts`` of them) into ``out``; parts already there are kept."""
    if size not in SIZES:
        raise ValueError(f"size={size!r}: must be one of {', '.join(SIZES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "standins.json"
    if manifest.exists():
        built = json.loads(manifest.read_text())
        if built.get("size") != size:
            raise ValueError(f"{out}: holds size={built.get('size')!r} stand-ins, not {size!r}; use another folder")
    p = standin_paths(out)
    sg3, sg2 = (SG3_R_FFHQ_1024, SG2_FFHQ_1024) if size == "real" else (TINY_SG3_R, TINY_SG2)
    steps: dict[str, Callable[[], Any]] = {
        "sd15": lambda: build_sd15(p["sd15"], p["sd15_fp16"], size, seed),
        "stylegan3": lambda: build_stylegan(p["stylegan3"], "stylegan3", sg3, seed),
        "stylegan2": lambda: build_stylegan(p["stylegan2"], "stylegan2", sg2, seed + 1),
        "buffalo_l": lambda: build_buffalo_l(p["buffalo_l"], size, seed),
        "fairface": lambda: build_fairface(p["fairface"], seed + 3),
        "verification": lambda: build_verification(p["verification"], bin_pairs, seed + 4),
        "ijbc": lambda: build_ijbc(p["ijbc"], ijb_templates, seed + 5),
    }
    # What a finished part leaves (SD 1.5: both folders, renamed one after the other).
    done = {"sd15": [p["sd15"], p["sd15_fp16"]], "buffalo_l": [p["buffalo_l"] / "w600k_r50.onnx"],
            "verification": [p["verification"] / f"{VERIFICATION_NAMES[-1]}.bin"]}
    for name, build in steps.items():
        if parts is not None and name not in parts:
            continue
        if all(f.exists() for f in done.get(name, [p[name]])):
            continue
        log.info("rehearsal: building %s (%s)", name, size)
        build()
    from gandiff.artifacts import atomic_write_json

    atomic_write_json(manifest, {"size": size, "seed": seed, "bin_pairs": bin_pairs, "ijb_templates": ijb_templates,
                                 "stylegan3_kwargs": sg3, "stylegan2_kwargs": sg2,
                                 "files": {k: str(v.relative_to(out)) for k, v in p.items()}})
    return p
