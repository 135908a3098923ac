"""The field's comparison table, and the variation / separability table, for reports and ``gandiff compare``.

Synthetic face datasets are compared one way: a fixed recognizer recipe is trained on each (10K identities x
50 images is the common scale) and its 10-fold accuracy on LFW, CFP-FP, CPLFW, AgeDB-30 and CALFW is reported
with their average (often IJB-B/C TAR@FAR too). ``field_rows`` builds that table from evaluate results
(``bin-<name>``, ``lfw-pairs``, ``ijb-<target>`` items; a benchmark not measured shows "–", never 0) and puts
the published numbers of the known datasets (``gandiff/assets/published_results.csv``, each with its source
and recognizer, marked where second-hand) beside them. ``measure_rows`` does the same for the dataset
measures of ``gandiff.evaluation.measures`` and the export's leakage audit.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gandiff.errors import UserError

PUBLISHED_CSV = Path(__file__).resolve().parents[1] / "assets" / "published_results.csv"
BENCHMARKS = (("lfw", "LFW"), ("cfp_fp", "CFP-FP"), ("cplfw", "CPLFW"), ("agedb_30", "AgeDB-30"), ("calfw", "CALFW"))
# Names people give the same .bin files (insightface packs: lfw, cfp_fp, agedb_30, calfw, cplfw).
ALIASES = {"agedb": "agedb_30", "agedb30": "agedb_30", "agedb-30": "agedb_30", "cfp-fp": "cfp_fp", "cfpfp": "cfp_fp"}
IJB_FARS = (("1e-4", "0.0001"), ("1e-5", "1e-05"))  # column label, key of gandiff.evaluation.ijb's summary
COLUMNS = ("dataset", "kind", "images", "identities", "lfw", "cfp_fp", "cplfw", "agedb_30", "calfw", "avg",
           "recognizer", "source", "second_hand", "note")
AVG_TOLERANCE = 0.011  # published averages are the five accuracies' mean, rounded to 2 decimals
DASH = "–"


class PublishedResultsError(UserError, ValueError):
    """A published-numbers file that cannot be read: the message names the file, the row and the column."""


@dataclass
class Published:
    dataset: str
    kind: str
    images: int | None
    identities: int | None
    scores: dict[str, float | None] = field(default_factory=dict)  # benchmark -> accuracy in %
    avg: float | None = None
    recognizer: str = ""
    source: str = ""
    second_hand: bool = False
    note: str = ""


def _number(text: str, where: str, col: str, lo: float, hi: float) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        raise PublishedResultsError(f"{where}: {col}={text!r} is not a number (give a value in [{lo:g}, {hi:g}] "
                                    "or leave it blank)") from None
    if not lo <= v <= hi:
        raise PublishedResultsError(f"{where}: {col}={text!r} is outside [{lo:g}, {hi:g}]")
    return v


def load_published(path: str | Path | None = None) -> list[Published]:
    """Read a published-numbers CSV (``#`` lines are comments). A malformed row raises naming the row."""
    path = Path(path) if path is not None else PUBLISHED_CSV
    if not path.is_file():
        raise PublishedResultsError(f"{path}: published-numbers file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    body = [(n, line) for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not body:
        raise PublishedResultsError(f"{path}: no header row (expected {','.join(COLUMNS)})")
    header_line, header = body[0]
    cols = next(csv.reader([header]))
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        raise PublishedResultsError(f"{path}: line {header_line}: header lacks {missing} (expected "
                                    f"{','.join(COLUMNS)})")
    out = []
    for lineno, line in body[1:]:
        cells = next(csv.reader(io.StringIO(line)))
        name = cells[0].strip() if cells else ""
        where = f"{path}: row at line {lineno} ({name or 'no dataset name'!r})"
        if len(cells) != len(cols):
            raise PublishedResultsError(f"{where}: {len(cells)} fields, the header has {len(cols)} "
                                        "(quote a field that holds a comma)")
        row = dict(zip(cols, cells))
        if not name:
            raise PublishedResultsError(f"{where}: dataset is empty")
        kind = row["kind"].strip()
        if kind not in ("synthetic", "real"):
            raise PublishedResultsError(f"{where}: kind={kind!r} must be synthetic or real")
        hand = row["second_hand"].strip().lower()
        if hand not in ("yes", "no"):
            raise PublishedResultsError(f"{where}: second_hand={row['second_hand']!r} must be yes or no")
        if not row["source"].strip():
            raise PublishedResultsError(f"{where}: source is empty (name the paper or repository file)")
        counts = {}
        for c in ("images", "identities"):
            v = _number(row[c], where, c, 1, 1e12)
            if v is not None and v != int(v):
                raise PublishedResultsError(f"{where}: {c}={row[c]!r} must be a whole number")
            counts[c] = None if v is None else int(v)
        scores = {b: _number(row[b], where, b, 0.0, 100.0) for b, _ in BENCHMARKS}
        avg = _number(row["avg"], where, "avg", 0.0, 100.0)
        if avg is not None and all(v is not None for v in scores.values()):
            mean = sum(scores.values()) / len(scores)
            if abs(mean - avg) > AVG_TOLERANCE:
                raise PublishedResultsError(f"{where}: avg={avg} is not the mean of the five benchmarks "
                                            f"({mean:.3f}): check the numbers against the source")
        out.append(Published(name, kind, counts["images"], counts["identities"], scores, avg,
                             row["recognizer"].strip(), row["source"].strip(), hand == "yes", row["note"].strip()))
    return out


# --------------------------------------------------------------------------------------------- run rows


def benchmark_key(name: str) -> str:
    n = name.lower()
    return ALIASES.get(n, n)


def run_benchmarks(items: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Accuracies (%) and TARs (%) an evaluation measured: ``{lfw: 99.1, ..., heldout: 97.2, ijbc@1e-4: 90.0}``."""
    out: dict[str, float] = {}
    for key, r in items.items():
        if r.get("status") != "ok":
            continue
        b = r.get("benchmark") or {}
        if key.startswith("bin-") and b.get("accuracy_mean") is not None:
            out[benchmark_key(key[4:])] = 100.0 * float(b["accuracy_mean"])
        elif key == "heldout-recognizer" and b.get("accuracy_mean") is not None:
            out["heldout"] = 100.0 * float(b["accuracy_mean"])
        elif key.startswith("ijb-"):
            for label, k in IJB_FARS:
                if b.get(f"tar@far={k}") is not None:
                    out[f"{key[4:]}@{label}"] = 100.0 * float(b[f"tar@far={k}"])
    lfw = items.get("lfw-pairs") or {}
    if "lfw" not in out and lfw.get("status") == "ok" and (lfw.get("benchmark") or {}).get("accuracy_mean") is not None:
        out["lfw"] = 100.0 * float(lfw["benchmark"]["accuracy_mean"])
    return out


def _pct(v: float | None) -> str:
    return DASH if v is None else f"{v:.2f}"


def _scale(images: int | None, identities: int | None) -> str:
    if images is None and identities is None:
        return DASH
    def short(n: int | None) -> str:
        if n is None:
            return "?"
        return f"{n / 1e6:.2f}M" if n >= 100_000 else (f"{n / 1e3:.1f}K" if n >= 10_000 else str(n))
    return f"{short(identities)} ids x {short(images)} images" if identities else f"{short(images)} images"


def run_field_row(label: str, items: dict[str, dict[str, Any]], recognizer: str = "") -> dict[str, Any]:
    """One table row for an evaluation (its ``metrics.json`` items)."""
    scores = run_benchmarks(items)
    data = next((items[k] for k in ("export-face", "export-recognizer") if (items.get(k) or {}).get("num_images")),
                {})
    five = [scores.get(b) for b, _ in BENCHMARKS]
    row: dict[str, Any] = {"dataset": label, "scale": _scale(data.get("num_images"), data.get("num_identities"))}
    row.update({col: _pct(scores.get(b)) for b, col in BENCHMARKS})
    row["Avg"] = _pct(sum(five) / len(five)) if all(v is not None for v in five) else DASH
    for k, v in scores.items():
        if "@" in k:
            tgt, far = k.split("@")
            row[f"{tgt.upper()} TAR@FAR={far}"] = _pct(v)
    row["held-out (own data)"] = _pct(scores.get("heldout"))
    row["recognizer"] = recognizer or "this run's trained recognizer"
    row["source"] = "this run"
    return row


def published_field_row(p: Published) -> dict[str, Any]:
    row: dict[str, Any] = {"dataset": f"{p.dataset} ({p.kind})", "scale": _scale(p.images, p.identities)}
    row.update({col: _pct(p.scores.get(b)) for b, col in BENCHMARKS})
    row["Avg"] = _pct(p.avg)
    row["held-out (own data)"] = DASH
    row["recognizer"] = p.recognizer
    row["source"] = p.source + (" [second-hand]" if p.second_hand else "")
    return row


def field_rows(runs: list[tuple[str, dict[str, dict[str, Any]]]], published: list[Published] | None = None
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, columns): the runs first, then the published rows. IJB columns appear when some run has them."""
    rows = [run_field_row(label, items) for label, items in runs]
    rows += [published_field_row(p) for p in (published or [])]
    cols = ["dataset", "scale", *[c for _, c in BENCHMARKS], "Avg"]
    cols += sorted({k for r in rows for k in r if k.startswith("IJB")})
    cols += ["held-out (own data)", "recognizer", "source"]
    for r in rows:
        for c in cols:
            r.setdefault(c, DASH)
    return rows, cols


def field_summary(items: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Flat numbers for a tracker summary (W&B): ``{"lfw": 99.1, ..., "avg": ...}``; absent benchmarks absent."""
    scores = run_benchmarks(items)
    out = {k.replace("@", "_tar@far="): round(v, 4) for k, v in scores.items()}
    five = [scores.get(b) for b, _ in BENCHMARKS]
    if all(v is not None for v in five):
        out["avg"] = round(sum(five) / len(five), 4)
    return out


# --------------------------------------------------------------------------------------------- measures


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return DASH if v is None else fmt.format(v)


def measure_row(label: str, measures: dict[str, Any] | None, leakage: dict[str, Any] | None = None,
                embedder: str = "") -> dict[str, Any]:
    """One row of the variation / separability table from ``dataset_measures`` output (and leakage.json)."""
    m = measures or {}
    sep = m.get("separability") or {}
    near = m.get("nearest_other") or {}
    pose = m.get("pose") or {}
    attrs = m.get("attributes") or {}
    row = {
        "dataset": label, "embedder": embedder or DASH, "images": m.get("images"), "identities": m.get("identities"),
        "Vendi / identity (mean)": _num((m.get("vendi") or {}).get("mean"), "{:.2f}"),
        "mated cos (mean)": _num((m.get("mated") or {}).get("mean")),
        "mated cos (std)": _num((m.get("mated") or {}).get("std")),
        "yaw std / identity (deg)": _num((pose.get("yaw_std") or {}).get("mean"), "{:.1f}"),
        "pitch std / identity (deg)": _num((pose.get("pitch_std") or {}).get("mean"), "{:.1f}"),
    }
    for a in ("gender", "age_bin", "race"):
        row[f"{a} disagreement"] = _num(((attrs.get(a) or {}).get("disagreement") or {}).get("mean"))
    if sep.get("identities"):
        row[f"separable @{sep.get('threshold', 0.4):g} (Vec2Face)"] = (
            f"{sep['separable']}/{sep['identities']} ({100 * sep['fraction']:.1f}%)")
    else:
        row["separable @0.4 (Vec2Face)"] = DASH
    row["nearest other id (mean / p95)"] = (DASH if near.get("mean") is None
                                            else f"{near['mean']:.3f} / {near['p95']:.3f}")
    if leakage is None:
        row["leaked identities"] = "not audited"
    else:
        row["leaked identities"] = f"{leakage.get('identities_flagged', 0)} ({leakage.get('images_flagged', 0)} images)"
    return row


MEASURED_ITEMS = (("export", "{made} (export)"), ("generate", "{made} (all generated faces)"),
                  ("gan", "GAN variations (GAN-only data)"))


def run_measures(items: dict[str, dict[str, Any]], made: str = "diffusion", prefix: str = ""
                 ) -> list[tuple[str, dict[str, Any]]]:
    """(label, item) pairs of an evaluation's datasets, face embedder first: the measures table's input."""
    out = []
    for which in ("face", "recognizer"):
        for kind, label in MEASURED_ITEMS:
            r = items.get(f"{kind}-{which}")
            if r:
                out.append((f"{prefix}{label.format(made=made)}", r))
    return out


def measure_rows(entries: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows from (label, evaluate item row) pairs whose item carries ``measures``."""
    rows = []
    for label, r in entries:
        if r.get("status") != "ok" or not r.get("measures"):
            continue
        rows.append(measure_row(label, r["measures"], r.get("leakage"), str(r.get("embedder", ""))))
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    for r in rows:
        for c in cols:
            r.setdefault(c, DASH)
    return rows


FIELD_NOTE = ("Rows marked 'this run' come from this evaluation; the others are published numbers of other "
              "datasets at the 10K identities x 50 images scale (gandiff/assets/published_results.csv: each "
              "number's source, marked [second-hand] where that source copied it from another paper), trained "
              "with their own recipes: compare like with like (same recipe, e.g. trainer=datacv_r50, same "
              "benchmark files). A benchmark that was not measured shows '–'.")
DEMO_NOTE = ("No benchmark .bin files are configured (the demo): the five benchmark columns stay '–' and the "
             "recognizer's accuracy on held-out pairs of the run's own identities stands in for them "
             "(held-out column). Configure benchmark=verification_bins benchmark.root=<folder of lfw.bin ...> "
             "to fill them.")
MEASURES_NOTE = ("Intra-class variation (Vendi score per identity under the cosine kernel: effective number of "
                 "distinct images; mated cosine; spread of head pose and of attribute labels within an identity) "
                 "and inter-class separability (Vec2Face's count of identities whose centre stays at cosine <= 0.4 "
                 "to every earlier identity; the nearest other identity's centre cosine), same embedder for every "
                 "row. GAN variations are the GAN-only data of the same identities.")


def add_field_sections(rep: Any, runs: list[tuple[str, dict[str, dict[str, Any]]]],
                       measures: list[tuple[str, dict[str, Any]]], published: list[Published] | None = None) -> None:
    """Append the field table and the measures table to a ``gandiff.evaluation.document.Report``."""
    published = load_published() if published is None else published
    rows, cols = field_rows(runs, published)
    rep.heading("The field's table: verification accuracy (%) beside published datasets")
    rep.text(FIELD_NOTE)
    if not any(run_benchmarks(items).keys() - {"heldout"} for _, items in runs):
        rep.text(DEMO_NOTE)
    rep.table(rows, cols)
    mrows = measure_rows(measures)
    rep.heading("Variation and separability of the datasets")
    if mrows:
        rep.text(MEASURES_NOTE)
        rep.table(mrows)
    else:
        rep.text("No dataset measures were computed (every dataset was empty or not evaluated).")
