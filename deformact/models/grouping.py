"""Which tokens share an attention group in each block (paper Sec. 3.3; docs/DESIGN.md).

Joint stride attention alternates two groupings of the V joint types, as temporal stride
attention alternates strided and contiguous steps:

* even blocks: joint v joins group v mod s_j (strided, the paper's stride);
* odd blocks: skeleton groups. Every bone and left/right flip pair of the layout that the strided
  grouping splits is kept inside one group, no group holds more than ceil(V / s_j) joints (the
  strided grouping's largest group, so the attention cost stays the same), and among such
  partitions the one keeping the most bones together is taken (body parts).

So every bone and flip pair meets in at least one of any two consecutive blocks. A joint count
without a known layout falls back to contiguous runs of joints in odd blocks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deformact.data.skeletons import Skeleton

Pair = tuple[int, int]
_SEARCH_LIMIT = 200_000  # partial assignments tried by the exhaustive search before going greedy


def strided_assignment(joints: int, stride: int) -> list[int]:
    return [v % stride for v in range(joints)]


def contiguous_assignment(joints: int, stride: int) -> list[int]:
    size = math.ceil(joints / stride)
    return [v // size for v in range(joints)]


def _components(joints: int, pairs: Sequence[Pair]) -> list[list[int]]:
    parent = list(range(joints))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        parent[root(a)] = root(b)
    comps: dict[int, list[int]] = {}
    for v in range(joints):
        comps.setdefault(root(v), []).append(v)
    return sorted(comps.values(), key=min)


def _canonical(assignment: Sequence[int]) -> list[int]:
    """Relabel groups in order of their lowest joint index."""
    order: dict[int, int] = {}
    return [order.setdefault(g, len(order)) for g in assignment]


def skeleton_assignment(joints: int, stride: int, bones: Sequence[Pair], flip_pairs: Sequence[Pair]
                        ) -> list[int]:
    """The odd-block grouping described in the module docstring: group id per joint."""
    if stride == 1:
        return [0] * joints
    strided = strided_assignment(joints, stride)
    must = [(a, b) for a, b in list(bones) + list(flip_pairs) if strided[a] != strided[b]]
    comps = _components(joints, must)
    capacity = math.ceil(joints / stride)
    while max(len(c) for c in comps) > capacity:  # cannot keep all: split the largest link set
        comps = _split_largest(comps, capacity)
    of = {v: i for i, c in enumerate(comps) for v in c}
    between: dict[Pair, int] = {}
    for a, b in bones:  # bones between components: the search keeps as many as it can together
        ca, cb = sorted((of[a], of[b]))
        if ca != cb:
            between[(ca, cb)] = between.get((ca, cb), 0) + 1
    out = [0] * joints
    best = _search(comps, stride, capacity, between)
    if best is None:
        for g, group in enumerate(_greedy(comps, stride, capacity)):
            for v in group:
                out[v] = g
        return _canonical(out)
    for comp, g in zip(comps, best):
        for v in comp:
            out[v] = g
    return _canonical(out)


def _split_largest(comps: list[list[int]], capacity: int) -> list[list[int]]:
    comps = sorted(comps, key=len, reverse=True)
    big = sorted(comps[0])
    return sorted(comps[1:] + [big[:capacity], big[capacity:]], key=min)


def _search(comps: list[list[int]], groups: int, capacity: int, between: dict[Pair, int]
            ) -> list[int] | None:
    """Exhaustive assignment of components to groups under the capacity, keeping the most bones
    together; the first (lowest) assignment wins ties. None when the search grows too large."""
    sizes = [len(c) for c in comps]
    best: list[int] | None = None
    best_score = -1
    tried = 0
    assign: list[int] = []
    load = [0] * groups

    def score() -> int:
        return sum(n for (a, b), n in between.items() if assign[a] == assign[b])

    def visit(i: int, used: int) -> bool:
        nonlocal best, best_score, tried
        tried += 1
        if tried > _SEARCH_LIMIT:
            return False
        if i == len(comps):
            s = score()
            if s > best_score:
                best, best_score = list(assign), s
            return True
        for g in range(min(used + 1, groups)):  # groups are interchangeable: open them in order
            if load[g] + sizes[i] <= capacity:
                load[g] += sizes[i]
                assign.append(g)
                ok = visit(i + 1, max(used, g + 1))
                assign.pop()
                load[g] -= sizes[i]
                if not ok:
                    return False
        return True

    return best if visit(0, 0) else None


def _greedy(comps: list[list[int]], groups: int, capacity: int) -> list[list[int]]:
    """Largest component first into the group with the most room; a component that fits nowhere
    is split over the groups with room (the capacity always holds: V <= groups * capacity)."""
    load = [0] * groups
    out: list[list[int]] = [[] for _ in range(groups)]
    for comp in sorted(comps, key=lambda c: (-len(c), min(c))):
        rest = sorted(comp)
        while rest:
            g = min(range(groups), key=lambda g: (load[g], g))
            take = rest if load[g] + len(rest) <= capacity else rest[: capacity - load[g]]
            out[g] += take
            load[g] += len(take)
            rest = rest[len(take):]
    return out


def joint_assignments(depth: int, joints: int, stride: int, layout: str | None = None) -> list[list[int]]:
    """Group id of each joint type in each of ``depth`` blocks (strided in even, skeleton groups in
    odd blocks). ``layout`` names a skeleton (coco17 | ntu25 | penn13); None infers it from V."""
    strided = strided_assignment(joints, stride)
    skel = known_skeleton(joints, layout)
    if skel is None:
        odd = contiguous_assignment(joints, stride)
    else:
        odd = skeleton_assignment(joints, stride, skel.edges, skel.flip_pairs)
    return [list(strided if i % 2 == 0 else odd) for i in range(depth)]


def known_skeleton(joints: int, layout: str | None) -> Skeleton | None:
    """The skeleton layout for V joints (by name, or inferred from V), or None when V has none."""
    from deformact.data.skeletons import SKELETONS

    if layout is not None:
        return SKELETONS[layout]
    return next((s for s in SKELETONS.values() if s.num_joints == joints), None)


def members(persons: int, joints: int, assignment: Sequence[int]) -> list[list[int]]:
    """Token indices (person-major, m * V + v) of each group; joint v of every person joins
    group ``assignment[v]``."""
    count = max(assignment) + 1
    return [[m * joints + v for m, v in itertools.product(range(persons), range(joints)) if assignment[v] == g]
            for g in range(count)]


def time_groups(steps: int, stride: int, contiguous: bool) -> list[list[int]]:
    """Strided: t joins group t mod stride. Contiguous: consecutive runs of steps/stride."""
    if contiguous:
        size = math.ceil(steps / stride)
        return [list(range(g * size, min((g + 1) * size, steps))) for g in range(stride)]
    return [list(range(g, steps, stride)) for g in range(stride)]
