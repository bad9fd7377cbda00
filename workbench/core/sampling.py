"""How a record limit picks its records, in the CLI, the app and exported notebooks alike: a seeded sample stratified
by label, then source, then behaviour, so a small limit still covers every label, source and harmful behaviour.

At each level the quota is split as evenly as the groups' sizes allow (not in proportion to them: coverage first),
and behaviours that the label's other sources left out get the remainders first, so the sources of one label cover
different behaviours. Within a group the records are a seeded random sample; the result keeps the set's order.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from .records import Record

R = TypeVar("R", bound=Record)
METHOD = "stratified by label, source and behaviour"


def even_split(total: int, sizes: Sequence[int], priority: Sequence[int]) -> list[int]:
    """`total` split over groups of `sizes` as evenly as their sizes allow; leftover units go one at a time to the
    groups in `priority` order (indices), skipping full ones."""
    shares = [0] * len(sizes)
    left = min(total, sum(sizes))
    while left:
        open_groups = [i for i in range(len(sizes)) if shares[i] < sizes[i]]
        each = left // len(open_groups)
        if each:
            for i in open_groups:
                take = min(each, sizes[i] - shares[i])
                shares[i] += take
                left -= take
            continue
        for i in (i for i in priority if shares[i] < sizes[i]):
            if not left:
                break
            shares[i] += 1
            left -= 1
    return shares


def _groups(indices: Sequence[int], key: Callable[[int], Hashable]) -> dict[Hashable, list[int]]:
    found: dict[Hashable, list[int]] = {}
    for index in indices:
        found.setdefault(key(index), []).append(index)
    return dict(sorted(found.items(), key=lambda item: str(item[0])))


def stratified_sample(records: Sequence[R], limit: int | None, seed: int = 0) -> list[R]:
    """`limit` records (all when None or at least the set's size), stratified as the module says; same records
    for the same set, limit and seed."""
    if limit is not None and limit < 1:
        raise ValueError(f"the record limit must be at least 1, got {limit}")
    if limit is None or len(records) <= limit:
        return list(records)
    rng = random.Random(seed)
    chosen: list[int] = []
    labels = _groups(range(len(records)), lambda i: records[i].label)
    label_order = rng.sample(range(len(labels)), len(labels))
    for quota, members in zip(even_split(limit, [len(m) for m in labels.values()], label_order), labels.values()):
        sources = _groups(members, lambda i: records[i].source)
        source_order = rng.sample(range(len(sources)), len(sources))
        used: Counter = Counter()  # behaviours this label's sources have taken so far
        for share, in_source in zip(even_split(quota, [len(m) for m in sources.values()], source_order),
                                    sources.values()):
            behaviours = _groups(in_source, lambda i: records[i].behavior or "")
            names = list(behaviours)
            tiebreak = {name: rng.random() for name in names}
            priority = sorted(range(len(names)), key=lambda b: (used[names[b]], tiebreak[names[b]]))
            for take, name in zip(even_split(share, [len(behaviours[n]) for n in names], priority), names):
                if take:
                    used[name] += take
                    chosen += rng.sample(behaviours[name], take)
    return [records[i] for i in sorted(chosen)]


def composition(records: Sequence[Record], total: int, seed: int = 0) -> dict[str, Any]:
    """What a sample holds, for run.json: the method, counts per label and source, and harmful behaviours covered."""
    behaviours = {r.behavior for r in records if r.label == "harmful" and r.behavior}
    return {"method": METHOD if len(records) < total else "all records", "seed": seed, "records": len(records),
            "of": total, "by_label_and_source": dict(sorted(Counter(f"{r.label} · {r.source}" for r in records)
                                                            .items())),
            "harmful_behaviours": len(behaviours)}
