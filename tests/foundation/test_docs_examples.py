"""The docs stay true: docs/extending.md's four worked extensions run as written, every ``docs/design.md#...`` link
in a module docstring names a heading there, module docstrings stay short, and the README keeps CI's command.

In docs/extending.md a code block headed ``# file: <path>`` is written to a scratch folder (importable from
there), one headed ``# add to: <module>.<Class>[.__post_init__]`` is added to a subclass of that class as written,
and a ``console`` block's last line is the exact message its command prints.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import importlib
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENDING = ROOT / "docs" / "extending.md"
DESIGN = ROOT / "docs" / "design.md"
MAX_DOCSTRING_LINES = 12  # "a few lines" (STYLE.md); the rationale lives in docs/design.md

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def sections(path: Path) -> dict[str, str]:
    """``## Title`` -> the text under it."""
    out, title = {}, None
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("## "):
            title = line[3:].strip()
            out[title] = ""
        elif title is not None:
            out[title] += line
    return out


def blocks(section: str) -> list[tuple[str, str, str]]:
    """(language, header line, body) of every fenced block of a section."""
    got = []
    for lang, text in FENCE.findall(section):
        head, _, body = text.partition("\n")
        got.append((lang, head.strip(), body))
    return got


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


@pytest.fixture
def example(tmp_path, monkeypatch):
    """Write a section's ``# file:`` blocks under tmp_path (on sys.path); return (additions, consoles)."""
    made_modules: list[str] = []

    def load(title: str) -> tuple[dict[str, str], list[str]]:
        section = sections(EXTENDING)[title]
        additions: dict[str, str] = {}
        consoles: list[str] = []
        for lang, head, body in blocks(section):
            if head.startswith("# file: "):
                rel = head[len("# file: "):]
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / rel).write_text(head + "\n" + body)
                if rel.endswith(".py"):
                    made_modules.append(rel[:-3].replace("/", "."))
            elif head.startswith("# add to: "):
                additions[head[len("# add to: "):]] = body
            elif lang == "console":
                consoles.append(head + "\n" + body)
            else:
                raise AssertionError(f"docs/extending.md, {title!r}: a {lang or 'plain'} block headed {head!r} is "
                                     "not run by this test: head it '# file: <path>' or '# add to: <Class>'")
        monkeypatch.syspath_prepend(str(tmp_path))
        return additions, consoles

    yield load
    for name in made_modules:
        sys.modules.pop(name, None)


def extended(additions: dict[str, str], dotted: str) -> type:
    """A dataclass subclass of ``dotted`` with the field lines and ``__post_init__`` lines the docs add to it."""
    module, _, cls_name = dotted.rpartition(".")
    base = getattr(importlib.import_module(module), cls_name)
    fields = textwrap.dedent(additions[dotted])
    rules = textwrap.dedent(additions.get(f"{dotted}.__post_init__", "pass"))
    src = (f"@dataclasses.dataclass\nclass Extended(base):\n{textwrap.indent(fields, '    ')}\n"
           f"    def __post_init__(self):\n        super().__post_init__()\n{textwrap.indent(rules, '        ')}\n")
    ns = {"dataclasses": dataclasses, "base": base, **vars(importlib.import_module(module))}
    exec(src, ns)  # noqa: S102  (the documented lines, as written)
    return ns["Extended"]


# ------------------------------------------------------------------------------------------- docs/extending.md


def test_every_section_of_extending_is_covered():
    assert {"Code map", "A new setting", "A new diffusion backend", "A new benchmark", "A new stage"} <= set(
        sections(EXTENDING))
    code_map = sections(EXTENDING)["Code map"]
    for path in re.findall(r"`(gandiff/[\w/]+\.py)`", code_map):
        assert (ROOT / path).is_file(), f"docs/extending.md's code map names {path}, which does not exist"


def test_a_new_setting(example):
    from omegaconf import OmegaConf

    from gandiff.schema import ConfigError

    additions, consoles = example("A new setting")
    Extended = extended(additions, "gandiff.curation.schema.CurationConfig")
    ok = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Extended), {"min_sharpness": 50}))
    assert ok.min_sharpness == 50.0 and Extended().min_sharpness == 0.0
    (console,) = consoles
    command, message = console.strip().splitlines()
    value = command.split("curation.min_sharpness=")[1]
    with pytest.raises(ConfigError) as e:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Extended), {"min_sharpness": float(value)}))
    assert str(e.value) == message


def test_a_new_diffusion_backend(example, tmp_path):
    from gandiff.artifacts import save_image
    from gandiff.config import compose, validate
    from gandiff.diffusion.backend import Adapter, DiffusionBackend, RenderSpec, Sampler, TrainIdentity, build_backend

    example("A new diffusion backend")
    cfg = compose([f"paths.root={tmp_path / 'runs'}", "logger=none", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                   "dreambooth=mean_colour"])
    assert cfg.dreambooth.backend._target_ == "mean_colour_backend.MeanColourBackend"
    settings = validate(cfg).dreambooth
    backend = build_backend(cfg.dreambooth.backend, settings, 0, tmp_path / "models")
    assert isinstance(backend, DiffusionBackend) and backend.noise == 8.0
    colours = [(200, 40, 40), (40, 40, 200)]
    idents = []
    for i, c in enumerate(colours):
        anchor = save_image(tmp_path / "ids" / f"id_{i}" / "anchor.png", np.full((16, 16, 3), c, np.uint8))
        idents.append(TrainIdentity(f"id_{i}", (anchor,), "a photo of sks person", "person", seed=i))
    backend.load("float32", "cpu")
    saved = []
    with backend.train_group(idents, tmp_path / "work") as trained:
        for i in range(len(idents)):
            saved.append(backend.save_adapter(trained, i, tmp_path / "adapters" / f"id_{i}"))
    assert [s.mode for s in saved] == ["colour", "colour"] and saved[1].weights.name == "colour.npy"
    specs = [RenderSpec("a photo of sks person", "", seed=s, adapter=s % 2) for s in range(4)]
    with backend.adapters([Adapter(f"id_{i}", s.mode, s.weights) for i, s in enumerate(saved)]):
        images = backend.render(specs, Sampler("ddim", 2, 3.0, 32))
    means = [np.asarray(im, np.float32).mean((0, 1)) for im in images]
    for spec, m in zip(specs, means):
        assert np.abs(m - colours[spec.adapter]).max() < 5, (spec, m)  # each image through its own slot
    (base,) = backend.render([RenderSpec("a photo of a person", "", seed=9)], Sampler("ddim", 2, 3.0, 32))
    assert np.abs(np.asarray(base, np.float32).mean((0, 1)) - 128).max() < 5  # slot -1: the base model


def test_a_new_benchmark(example, tmp_path):
    from tests.evaluation.conftest import make_export, make_identities, make_train

    from gandiff.artifacts import ItemStore, read_table, save_image
    from gandiff.config import compose, validate
    from gandiff.evaluation.registry import evaluator_for, unregister
    from gandiff.evaluation.report import build_report
    from gandiff.evaluation.stage import EvaluateStage
    from gandiff.pipeline import StageContext

    additions, _ = example("A new benchmark")
    Extended = extended(additions, "gandiff.evaluation.schema.BenchmarkConfig")
    module = importlib.import_module("pairs_csv_benchmark")  # registers the evaluator, as the docs say
    evaluator = module.PAIRS_CSV
    try:
        assert evaluator_for("csv-pairs") is evaluator
        # 12 pairs of flat-colour "faces" (6 mated, 6 not), aligned size, named in a CSV as the docs describe
        rng = np.random.default_rng(0)
        colours = rng.uniform(30, 220, size=(6, 3))
        rows = []
        for p in range(12):
            a, b = p % 6, (p % 6 if p % 2 == 0 else (p + 1) % 6)
            for side, c in (("left", a), ("right", b)):
                img = np.clip(rng.normal(colours[c], 20, size=(112, 112, 3)), 0, 255).astype(np.uint8)
                save_image(tmp_path / "pairs" / f"{p:02d}_{side}.png", img)
            rows.append({"left": f"{p:02d}_left.png", "right": f"{p:02d}_right.png", "same": int(a == b)})
        with open(tmp_path / "pairs" / "pairs.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["left", "right", "same"])
            w.writeheader()
            w.writerows(rows)

        cfg = compose([f"paths.root={tmp_path / 'runs'}", "logger=none", "device=cpu", "benchmark.num_folds=2",
                       "benchmark.embedders=[recognizer]", "benchmark.gan_variations=false"])
        bench = Extended(**{**dataclasses.asdict(validate(cfg).benchmark),
                            "pairs_csv": str(tmp_path / "pairs" / "pairs.csv")})
        out = tmp_path / "evaluate"
        inputs = {"identities": make_identities(tmp_path / "identities"), "export": make_export(tmp_path / "export"),
                  "train": make_train(tmp_path / "train")}
        ctx = StageContext(name="evaluate", cfg=cfg, run_dir=tmp_path, dir=out, key="k", inputs=inputs,
                           shard_index=0, shard_count=1, items=ItemStore(out))
        ctx.settings.benchmark = bench  # the schema with the documented field (the real one stays as it is)
        stage = EvaluateStage()
        assert "csv-pairs" in stage.items(ctx)
        stage.process(ctx, ["csv-pairs"])
        stage.merge(ctx, ["csv-pairs"])
        (row,) = read_table(out / "metrics.parquet")
        assert row["key"] == "csv-pairs" and row["status"] == "ok"
        item = __import__("json").loads((out / "metrics.json").read_text())["items"]["csv-pairs"]
        assert item["dataset"] == "pairs.csv" and item["benchmark"]["num_pairs"] == 12
        assert (out / "scores" / "csv-pairs.npz").is_file()
        table = build_report("t", {}, out).to_markdown().split("## Benchmarks (trained recognizer)")[1]
        assert "| csv-pairs | ok | 12 |" in table.split("##")[0]
    finally:
        unregister(evaluator)
    assert evaluator_for("csv-pairs") is None


def test_a_new_stage(example, tmp_path, monkeypatch):
    from tests.evaluation.conftest import make_identities

    from gandiff import stages
    from gandiff.artifacts import ItemStore, read_table
    from gandiff.pipeline import Stage, StageContext

    example("A new stage")
    module = importlib.import_module("contact_sheets")
    cls = module.ContactSheets
    assert issubclass(cls, Stage)
    # registered by name, as `plugins.contact_sheets=contact_sheets:ContactSheets` does
    target = cls.example.split("+plugins.contact_sheets=")[1].split()[0]
    monkeypatch.setitem(stages.STAGE_CLASSES, "contact_sheets", target)
    assert stages.stage_class("contact_sheets") is cls
    ident = make_identities(tmp_path / "identities", n_ids=3, per_id=4)
    out = tmp_path / "contact_sheets"
    ctx = StageContext(name="contact_sheets", cfg=None, run_dir=tmp_path, dir=out, key="k",
                       inputs={"identities": ident}, shard_index=0, shard_count=1, items=ItemStore(out))
    stage = cls()
    keys = stage.items(ctx)
    assert keys == ["id_000000", "id_000001", "id_000002"]
    stage.process(ctx, keys)
    assert stage.merge(ctx, keys) == {"identities": 3}
    assert [r["images"] for r in read_table(out / "sheets.parquet")] == [4, 4, 4]
    from PIL import Image

    assert Image.open(out / "sheets" / "id_000001.png").size == (4 * 64, 64)
    assert all(ItemStore(out).is_done(k) for k in keys)


# ------------------------------------------------------------------------------------ docstrings and design.md


def module_docstrings() -> dict[str, str]:
    out = {}
    for path in sorted((ROOT / "gandiff").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()), clean=False)
        out[str(path.relative_to(ROOT))] = doc or ""
    return out


def test_design_links_in_docstrings_and_docs_resolve():
    anchors = {slug(line.lstrip("#")) for line in DESIGN.read_text().splitlines() if line.startswith("#")}
    texts = {**module_docstrings(), **{str(p.relative_to(ROOT)): p.read_text()
                                      for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}}
    links = [(where, a) for where, text in texts.items() for a in re.findall(r"docs/design\.md#([\w-]+)", text)]
    assert len(links) > 20
    broken = [f"{where}: docs/design.md#{a}" for where, a in links if a not in anchors]
    assert not broken, f"links to headings docs/design.md does not have: {broken}"


def test_module_docstrings_are_short():
    long = {p: len(d.strip().splitlines()) for p, d in module_docstrings().items()
            if len(d.strip().splitlines()) > MAX_DOCSTRING_LINES}
    assert not long, f"module docstrings over {MAX_DOCSTRING_LINES} lines (move the rationale to docs/design.md): {long}"


def test_readme_keeps_ci_command_and_the_demo_export_is_not_called_empty():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()[-1]
    assert "make test" in readme and "make demo" in readme and "make rehearse" in readme
    stale = re.compile(r"demo'?s?\W+(untrained|export is empty|empty export)|empty export \(the demo", re.I)
    for where, text in {"README.md": readme, **module_docstrings()}.items():
        assert not stale.search(text), f"{where} still says the demo's export is empty"
