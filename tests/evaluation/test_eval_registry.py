"""The evaluator registry: a new benchmark is one function and one schema field, and it shows up in the evaluate
stage's metrics (json, parquet, counts) and in the report, in the section its registration names."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import pytest

from gandiff.artifacts import ItemStore, read_table
from gandiff.config import compose
from gandiff.evaluation.registry import Evaluator, Section, evaluator_for, evaluators, item_keys, register, registered
from gandiff.evaluation.schema import BenchmarkConfig
from gandiff.pipeline import StageContext


@dataclass
class ToyBenchmark(BenchmarkConfig):
    toy_pairs: int = 0  # the new benchmark's one schema field: the first N held-out pairs (0 = not measured)


def measure_toy(ev, key):
    """The new benchmark: the trained recognizer on the first ``toy_pairs`` pairs of the held-out set."""
    from gandiff.evaluation.evaluators import verification_row
    from gandiff.evaluation.verification import embed_images, load_bin

    embedder, name = ev.recognizer()
    images, issame = load_bin(ev.ctx.input_dir("train") / "heldout.bin")
    n = ev.bench.toy_pairs
    emb = embed_images(embedder.embed, images[: 2 * n], batch_size=ev.bench.batch_size, flip=False)
    return verification_row(ev, key, f"heldout.bin[:{n}]", emb, issame[:n], name)


TOY = Evaluator("toy", lambda b: ["toy-pairs"] if getattr(b, "toy_pairs", 0) else [], measure_toy,
                config="benchmark.toy_pairs")


def test_a_registered_evaluator_is_measured_and_reported(tmp_path, upstream):
    from gandiff.evaluation.report import build_report
    from gandiff.evaluation.stage import EvaluateStage

    ident, export, train = upstream
    cfg = compose(["paths.root=" + str(tmp_path / "runs"), "logger=none", "device=cpu",
                   "benchmark.embedders=[recognizer]", "benchmark.gan_variations=false", "benchmark.num_folds=2",
                   "benchmark.prompt_effects=false"])
    out = tmp_path / "evaluate"
    ctx = StageContext(name="evaluate", cfg=cfg, run_dir=tmp_path, dir=out, key="k",
                       inputs={"identities": ident, "export": export, "train": train}, shard_index=0, shard_count=1,
                       items=ItemStore(out))
    # the typed settings as the pipeline gives them, with the new field set (benchmark.toy_pairs=12)
    ctx.settings = replace(ctx.settings, benchmark=ToyBenchmark(**{**asdict(ctx.settings.benchmark), "toy_pairs": 12}))
    stage = EvaluateStage()
    assert "toy-pairs" not in stage.items(ctx)  # not registered: not measured
    shown = []
    own = Section("toy-section", lambda rep, view: (shown.append(sorted(view.items)),
                                                    rep.heading(f"Toy section: {len(view.items)} items")))
    # a second evaluator with its own report section: the number of identities of the run
    count = Evaluator("ids", lambda b: ["ids-count"],
                      lambda ev, key: ({"key": key, "status": "ok", "identities": len(ev.identity_table()[0])}, []),
                      section="toy-section")
    with registered(TOY, own, count):
        keys = stage.items(ctx)
        assert keys == ["export-recognizer", "heldout-recognizer", "toy-pairs", "ids-count"]
        keys = keys[2:]  # the built-in items are measured as always (tests/evaluation/test_eval_stage.py)
        stage.process(ctx, keys)
        counts = stage.merge(ctx, keys)
        rep = build_report("t", {}, out)
    m = json.loads((out / "metrics.json").read_text())
    toy = m["items"]["toy-pairs"]
    assert toy["status"] == "ok" and toy["benchmark"]["num_pairs"] == 12 and len(toy["fold_accuracy"]) == 2
    assert toy["dataset"] == "heldout.bin[:12]" and (out / "scores" / "toy-pairs.npz").is_file()
    assert m["items"]["ids-count"]["identities"] == 6
    assert counts["toy-pairs/accuracy"] == toy["benchmark"]["accuracy_mean"]
    assert [r["key"] for r in read_table(out / "metrics.parquet")] == keys
    md = rep.to_markdown()
    bench_table = md.split("## Benchmarks (trained recognizer)")[1].split("##")[0]
    assert f"| toy-pairs | ok | 12 | {toy['benchmark']['accuracy_mean']:.4g} |" in bench_table
    assert "ids-count" not in bench_table  # shown in its own section instead, after the built-in ones
    assert "## Toy section: 2 items" in md and md.index("## Toy section") > md.index("## Variation and separability")
    assert shown == [sorted(keys)]
    # once unregistered, the stage makes the built-in items only, and the report leaves the section out
    assert stage.items(ctx) == ["export-recognizer", "heldout-recognizer"] and evaluator_for("toy-pairs") is None
    assert "Toy section" not in build_report("t", {}, out).to_markdown()


def test_registry_refuses_clashes_and_foreign_keys():
    assert [e.name for e in evaluators()][:3] == ["export", "gan", "generate"]
    with pytest.raises(ValueError, match="Evaluator 'bin' is already registered"):
        register(Evaluator("bin", lambda b: [], lambda ev, key: ({}, [])))
    with pytest.raises(ValueError, match="no Section named 'nope'"):
        register(Section("x", lambda rep, view: None), before="nope")
    bad = Evaluator("odd", lambda b: ["even-1"], lambda ev, key: ({}, []))
    with registered(bad), pytest.raises(ValueError, match="evaluator 'odd' made items \\['even-1'\\]"):
        item_keys(BenchmarkConfig(root=None))
    assert evaluator_for("odd-1") is None


@pytest.mark.parametrize("first", ["gandiff.evaluation.evaluators", "gandiff.evaluation.prompt_effects_report",
                                   "gandiff.evaluation.sections"])
def test_builtin_order_does_not_depend_on_the_first_import(first):
    """A built-in module imported first loads the others from inside its own first register(): the built-ins
    still end up in BUILTINS order (items, metrics and report pages keep their order)."""
    import subprocess
    import sys

    code = (f"import importlib, json; importlib.import_module({first!r}); from gandiff.evaluation import registry as r; "
            "print(json.dumps([[e.name for e in r.evaluators()], [a.field for a in r.analyses()], "
            "[s.name for s in r._REGISTRY[r.Section].values()]]))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    code_ref = code.replace(f"importlib.import_module({first!r}); ", "")
    ref = subprocess.run([sys.executable, "-c", code_ref], capture_output=True, text=True, check=True).stdout
    assert got == ref and '"export"' in ref
