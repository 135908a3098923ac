"""The prompt bank: how each generated image of an identity is described.

GANDiffFace raises intra-class variation by prompting with accessories, poses, expressions, contexts and
lighting. A bank (``conf/prompts/*.yaml``) is a template plus families of options; each image draws, per family,
whether it contributes (``weight``) and one option, from the image's own seed, so a prompt depends only on
(run seed, identity id, image number), never on batching or sharding. ``mode=product`` walks the product of
the families' options instead.

Design: docs/design.md#prompt-banks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    weight: float  # probability that the family contributes to a sampled prompt
    options: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """One image's description: the prompt, its negative, the family choices ("" = family left out), the seed."""

    index: int
    prompt: str
    negative: str
    choices: dict[str, str]
    seed: int


def item_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts (run seed, identity id, image number): stable across machines and runs."""
    h = hashlib.sha256("/".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def parse_families(families: Mapping[str, Any], key: str = "prompts.families") -> list[Family]:
    """Families from config, checked: ``{name: {weight: w in [0, 1], options: [non-empty strings]}}``."""
    out = []
    for name, spec in families.items():
        if not isinstance(spec, Mapping) or set(spec) - {"weight", "options"} or "options" not in spec:
            raise ValueError(
                f"{key}.{name}={spec!r}: must be a mapping {{weight: 0..1, options: [str, ...]}}"
            )
        weight = float(spec.get("weight", 1.0))
        options = spec["options"]
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"{key}.{name}.weight={weight!r}: must be in [0, 1]")
        if (
            isinstance(options, str)
            or not isinstance(options, Sequence)
            or not options
            or not all(isinstance(o, str) and o.strip() for o in options)
        ):
            raise ValueError(
                f"{key}.{name}.options={options!r}: must be a non-empty list of non-empty strings"
            )
        out.append(Family(str(name), weight, tuple(options)))
    return out


def render(template: str, token: str, noun: str, choices: Sequence[str]) -> str:
    """Fill the template; empty choices leave no dangling commas (``"a photo of sks man"``)."""
    text = template.replace("{token}", token).replace("{noun}", noun)
    text = text.replace("{choices}", ", ".join(c for c in choices if c))
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,\s*(,\s*)*", ", ", text)  # collapse ", ," and spaces around commas
    return text.strip().strip(",").strip()


def sample_prompts(
    template: str,
    negative: str,
    families: Sequence[Family],
    token: str,
    noun: str,
    count: int,
    seed: int,
    identity: str,
    mode: str = "sample",
    product_families: Sequence[str] = (),
) -> list[PromptSpec]:
    """The ``count`` prompts of one identity, each with its image seed. Deterministic in (seed, identity, i).

    ``mode="sample"``: each family joins with probability ``weight``, then one option uniformly.
    ``mode="product"``: image i takes combination ``i % n`` of the product of ``product_families``
    (all families when empty), in the order the families are listed.
    """
    if mode not in ("sample", "product"):
        raise ValueError(f"prompts.mode={mode!r}: must be 'sample' or 'product'")
    combos: list[tuple[str, ...]] = []
    chosen = list(families)
    if mode == "product":
        names = [f.name for f in families]
        unknown = [n for n in product_families if n not in names]
        if unknown:
            raise ValueError(
                f"prompts.product_families={list(product_families)}: {unknown} not in the bank "
                f"(families: {names})"
            )
        chosen = [f for f in families if not product_families or f.name in product_families]
        combos = list(itertools.product(*(f.options for f in chosen)))
    out = []
    for i in range(count):
        image_seed = item_seed(seed, identity, i)
        picks = {f.name: "" for f in families}
        if mode == "sample":
            rng = np.random.default_rng(image_seed)
            for f in families:
                # Two draws per family always, so one family's weight never shifts another family's picks.
                joins, pick = rng.random() < f.weight, int(rng.integers(len(f.options)))
                if joins:
                    picks[f.name] = f.options[pick]
        else:
            for f, option in zip(chosen, combos[i % len(combos)]):
                picks[f.name] = option
        prompt = render(template, token, noun, [picks[f.name] for f in families])
        out.append(PromptSpec(index=i, prompt=prompt, negative=negative, choices=picks, seed=image_seed))
    return out
