"""Demographic targets: which attribute cells the kept identities must fill, and how many each.

GANDiffFace steers GAN sampling until a target distribution is met (Melzi et al. 2023, Sec. 3.1).
``identity.target`` is ``null``, ``uniform``, a mapping of marginals, a joint ``{"a|b": {...}}``, or a string
of equal-share factors (``gender*age_bin:20-29/30-39``) that needs no quoting on a command line. The shipped
targets are strings because Hydra merges a mapping into a mapping but replaces a string. Shares become integer
quotas by largest remainders, so every cell is within one identity of ``num * share``.

Design: docs/design.md#demographic-targets.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The vocabularies of gandiff.face.attributes (FairFace's bins and groups), repeated here so that a
# target can be checked when the config is read, without importing the face models.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"),
    "age_bin": ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"),
    "race": ("white", "black", "latino_hispanic", "east_asian", "southeast_asian", "indian", "middle_eastern"),
}
ALIASES = {"age": "age_bin", "sex": "gender"}

Cell = tuple[str, ...]


class TargetError(ValueError):
    """A target that cannot be read or cannot be met by the configured classifier."""


class TargetNotMetError(RuntimeError):
    """Sampling ran out of attempts before every cell was filled; the message names the cells."""


def _attr(name: str, key: str) -> str:
    name = ALIASES.get(str(name), str(name))
    if name not in VOCABULARY:
        raise TargetError(f"{key}: unknown attribute {name!r}; use one of {', '.join(VOCABULARY)}")
    return name


def _shares(attr: str, spec: Any, key: str) -> dict[str, float]:
    if spec == "uniform":
        return {v: 1.0 for v in VOCABULARY[attr]}
    if not isinstance(spec, Mapping) or not spec:
        raise TargetError(f"{key}={spec!r}: expected 'uniform' or a mapping value -> share or count")
    out = {}
    for v, s in spec.items():
        v = str(v)
        if v not in VOCABULARY[attr]:
            raise TargetError(f"{key}.{v}: unknown {attr} value; use one of {', '.join(VOCABULARY[attr])}")
        if not isinstance(s, (int, float)) or isinstance(s, bool) or s < 0 or not math.isfinite(s):
            raise TargetError(f"{key}.{v}={s!r}: must be a non-negative number")
        out[v] = float(s)
    return out


def allocate(weights: Mapping[Cell, float], num: int, key: str = "identity.target") -> dict[Cell, int]:
    """Integer quotas summing to ``num``: counts when the weights already are integers summing to ``num``,
    otherwise largest remainders of ``num * share``.

    Ties between equal remainders go to the cell whose attribute values are furthest below their own
    marginal targets, so a product of marginals keeps its marginals balanced too (50/50 gender x 50/50
    age over 6 identities gives 3 + 3 women and men and 3 + 3 in each age bin, not 4 + 2); then to the
    cell listed first.
    """
    total = sum(weights.values())
    if total <= 0:
        raise TargetError(f"{key}: the shares sum to {total}; at least one must be positive")
    if all(float(w).is_integer() for w in weights.values()) and int(total) == num:
        return {c: int(w) for c, w in weights.items()}
    cells = list(weights)
    exact = {c: num * weights[c] / total for c in cells}
    quotas = {c: int(math.floor(exact[c] + 1e-9)) for c in cells}
    width = len(cells[0]) if cells else 0
    marginal_target = [Counter() for _ in range(width)]
    for c in cells:
        for j, v in enumerate(c):
            marginal_target[j][v] += exact[c]
    for _ in range(num - sum(quotas.values())):
        current = [Counter() for _ in range(width)]
        for c in cells:
            for j, v in enumerate(c):
                current[j][v] += quotas[c]

        def rank(i: int) -> tuple:
            c = cells[i]
            deficit = sum(marginal_target[j][v] - current[j][v] for j, v in enumerate(c))
            return (-round(exact[c] - quotas[c], 9), -round(deficit, 9), i)

        best = min((i for i in range(len(cells)) if exact[cells[i]] - quotas[cells[i]] > 1e-9), key=rank)
        quotas[cells[best]] += 1
    return quotas


@dataclass
class DemographicTarget:
    attributes: tuple[str, ...]  # e.g. ("gender", "age_bin"); () = no target
    quotas: dict[Cell, int]  # cell (values in attribute order) -> identities wanted

    def cell_of(self, attrs: Any) -> Cell | None:
        """The cell of a classifier result (``Attributes`` or dict); None when it is outside the target."""
        get = attrs.get if isinstance(attrs, Mapping) else (lambda k: getattr(attrs, k, None))
        cell = tuple(str(get(a)) if get(a) is not None else "" for a in self.attributes)
        return cell if cell in self.quotas else None

    def label(self, cell: Cell) -> str:
        if not self.attributes:
            return "all"
        return ",".join(f"{a}={v}" for a, v in zip(self.attributes, cell))

    @property
    def num(self) -> int:
        return sum(self.quotas.values())


def parse_target_string(text: str, key: str = "identity.target") -> dict[str, Any]:
    """``"gender*age_bin:20-29/30-39"`` -> ``{"gender": "uniform", "age_bin": {"20-29": 1.0, "30-39": 1.0}}``."""
    out: dict[str, Any] = {}
    for factor in text.split("*"):
        name, _, values = factor.strip().partition(":")
        if not name.strip():
            raise TargetError(f"{key}={text!r}: expected 'uniform' or attributes joined by '*', each optionally "
                              "limited to values with ':v1/v2' (e.g. 'gender*age_bin:20-29/30-39')")
        name = name.strip()
        if name in out:
            raise TargetError(f"{key}={text!r}: attribute {name!r} appears twice")
        vals = [v.strip() for v in values.split("/")] if values.strip() else []
        if any(not v for v in vals):
            raise TargetError(f"{key}={text!r}: empty value in {factor.strip()!r}; separate values with '/'")
        out[name] = {v: 1.0 for v in vals} if vals else "uniform"
    return out


def parse_target(spec: Any, num: int, provided: Sequence[str], key: str = "identity.target") -> DemographicTarget:
    """Read ``identity.target`` for ``num`` identities; ``provided``: attributes the classifier estimates."""
    if spec is None or spec == {} or spec == "none":
        return DemographicTarget((), {(): num})
    provided = tuple(provided)
    if spec == "uniform":
        attrs = tuple(a for a in VOCABULARY if a in provided)
        if not attrs:
            raise TargetError(f"{key}=uniform: the attribute classifier estimates none of {', '.join(VOCABULARY)}")
        cells = list(itertools.product(*(VOCABULARY[a] for a in attrs)))
        return DemographicTarget(attrs, allocate({c: 1.0 for c in cells}, num, key))
    if isinstance(spec, str):
        spec = parse_target_string(spec, key)
    if not isinstance(spec, Mapping):
        raise TargetError(f"{key}={spec!r}: expected null, 'uniform', factors like 'gender*age_bin:20-29/30-39' or a "
                          "mapping (see gandiff.identity.demographics)")
    attrs: list[str] = []
    factors: list[dict[Cell, float]] = []
    for name, sub in spec.items():
        names = [_attr(n, f"{key}.{name}") for n in str(name).split("|")]
        for n in names:
            if n in attrs:
                raise TargetError(f"{key}.{name}: attribute {n!r} appears twice")
            if n not in provided:
                raise TargetError(f"{key}.{name}: the attribute classifier does not estimate {n!r} (it gives "
                                  f"{', '.join(provided) or 'nothing'}); choose attributes=fairface for race")
        attrs += names
        if len(names) == 1:
            factors.append({(v,): s for v, s in _shares(names[0], sub, f"{key}.{name}").items()})
            continue
        if not isinstance(sub, Mapping) or not sub:
            raise TargetError(f"{key}.{name}: a joint target needs a mapping 'v1|v2' -> share or count")
        joint = {}
        for cell_key, s in sub.items():
            values = tuple(str(cell_key).split("|"))
            if len(values) != len(names):
                raise TargetError(f"{key}.{name}.{cell_key}: expected {len(names)} values separated by '|'")
            for n, v in zip(names, values):
                if v not in VOCABULARY[n]:
                    raise TargetError(f"{key}.{name}.{cell_key}: unknown {n} value {v!r}; use one of "
                                      f"{', '.join(VOCABULARY[n])}")
            if not isinstance(s, (int, float)) or isinstance(s, bool) or s < 0:
                raise TargetError(f"{key}.{name}.{cell_key}={s!r}: must be a non-negative number")
            joint[values] = float(s)
        factors.append(joint)
    weights: dict[Cell, float] = {}
    integral = all(float(s).is_integer() for f in factors for s in f.values())
    for combo in itertools.product(*(f.items() for f in factors)):
        cell = tuple(v for c, _ in combo for v in c)
        # Independent marginals: product of normalised shares (counts only make sense for one factor).
        w = 1.0
        for (c, s), f in zip(combo, factors):
            w *= s / sum(f.values())
        weights[cell] = w
    if len(factors) == 1 and integral:
        weights = dict(factors[0])
    quotas = allocate(weights, num, key)
    return DemographicTarget(tuple(attrs), {c: q for c, q in quotas.items() if q > 0})


@dataclass
class CellCount:
    target: int
    kept: int = 0
    seen: int = 0  # candidates of this cell that passed the quality gate
    too_similar: int = 0  # of those, rejected by the distinctiveness check


@dataclass
class QuotaTracker:
    """Per-cell target vs achieved while sampling; ``report`` for the summary."""

    target: DemographicTarget
    counts: dict[Cell, CellCount] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = {c: CellCount(q) for c, q in self.target.quotas.items()}

    def open(self, cell: Cell | None) -> bool:
        return cell is not None and self.counts[cell].kept < self.counts[cell].target

    @property
    def done(self) -> bool:
        return all(c.kept >= c.target for c in self.counts.values())

    def report(self) -> list[dict[str, Any]]:
        return [{"cell": self.target.label(c), **dict(zip(self.target.attributes, c)), "target": n.target,
                 "achieved": n.kept, "candidates": n.seen, "rejected_similar": n.too_similar}
                for c, n in self.counts.items()]

    def shortfall_message(self, attempts: int, key: str = "identity.max_attempts") -> str:
        short = [(c, n) for c, n in self.counts.items() if n.kept < n.target]
        lines = [f"  {self.target.label(c)}: {n.kept} of {n.target} kept ({n.seen} candidates of this cell passed "
                 f"the quality gate, {n.too_similar} rejected as too similar to a kept identity)" for c, n in short]
        return (f"{key}={attempts}: every seed drawn and {len(short)} demographic cell(s) of identity.target still "
                "not filled:\n" + "\n".join(lines) + "\nRaise identity.max_attempts, relax identity.target, or raise "
                "identity.max_similarity.")
