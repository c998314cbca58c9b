"""Referring expressions as small programs evaluated against a scene, and their wording.

Three program forms, composable one level deep:

- `Select(kind, colour, size)`: the objects with those attributes ("the big red circle");
- `Rank(base, direction, k)`: the k-th of the `base` objects along a direction ("the second square from the
  left", "the circle in the top right");
- `Relate(base, relation, landmark)`: the `base` objects in a spatial relation to the one object that
  `landmark` selects ("the circle left of the green star").

Evaluation is three-valued, so that borderline geometry never yields an expression a person could read
two ways: each object is *surely* selected, *possibly* selected, or surely not. An expression is kept only
when the sure and the possible sets are both exactly {target} (`refers_uniquely`); a landmark must itself be
unique in the same sense. Attribute values are discrete (one hue per colour word, two well separated size
classes), so attributes are always definite; positions use a margin of `MARGIN` x min(H, W).

Scenes are duck-typed: anything with `width`, `height`, `scale` and `objects` whose items have `kind`,
`colour`, `size`, `cx`, `cy` and `r` (see `vlalign.synth.scenes`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

MARGIN = 0.07  # position differences below this fraction of min(H, W) count as "can't tell"
NEAR = 0.2  # "next to" needs the gap between outlines below this fraction of min(H, W)

# unit vectors pointing *towards* each direction (image axes: x right, y down)
_S = 1 / math.sqrt(2)
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1),
    "top left": (-_S, -_S), "top right": (_S, -_S), "bottom left": (-_S, _S), "bottom right": (_S, _S),
}  # fmt: skip
AXES = ("left", "right", "top", "bottom")
CORNERS = ("top left", "top right", "bottom left", "bottom right")
RELATIONS: dict[str, tuple[float, float] | None] = {
    "left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1), "next to": None,
}  # fmt: skip


@dataclass(frozen=True)
class Select:
    """The objects whose given attributes match (None = any)."""

    kind: str | None = None
    colour: str | None = None
    size: str | None = None

    def matches(self, obj: Any) -> bool:
        return (
            (self.kind is None or self.kind == obj.kind)
            and (self.colour is None or self.colour == obj.colour)
            and (self.size is None or self.size == obj.size)
        )


@dataclass(frozen=True)
class Rank:
    """The k-th (1-based) of the `base` objects counted from `direction`."""

    base: Select
    direction: str
    k: int = 1


@dataclass(frozen=True)
class Relate:
    """The `base` objects in `relation` to the single object selected by `landmark`."""

    base: Select
    relation: str
    landmark: Select | Rank


Program = Select | Rank | Relate


class Match(NamedTuple):
    sure: frozenset[int]
    maybe: frozenset[int]  # a superset of `sure`


_NONE = Match(frozenset(), frozenset())


def evaluate(program: Program, scene: Any) -> Match:
    """Indices of `scene.objects` that `program` surely / possibly selects."""
    if isinstance(program, Select):
        hits = frozenset(i for i, o in enumerate(scene.objects) if program.matches(o))
        return Match(hits, hits)
    if isinstance(program, Rank):
        return _rank(program, scene)
    if isinstance(program, Relate):
        return _relate(program, scene)
    raise TypeError(f"not a referring program: {program!r}")


def form_of(program: Program) -> str:
    """The grammar form: "attributes", "position" (k = 1 rank), "ordinal" (k > 1) or "relation"."""
    if isinstance(program, Select):
        return "attributes"
    if isinstance(program, Rank):
        return "position" if program.k == 1 else "ordinal"
    return "relation"


def refers_uniquely(program: Program, scene: Any, target: int) -> bool:
    """True when `program` selects exactly the object `target`, with no borderline alternative."""
    sure, maybe = evaluate(program, scene)
    return sure == maybe == {target}


def _rank(program: Rank, scene: Any) -> Match:
    objs, m = scene.objects, MARGIN * scene.scale
    members = [i for i, o in enumerate(objs) if program.base.matches(o)]
    if len(members) < max(2, program.k):  # "the left circle" presupposes several circles
        return _NONE
    ux, uy = DIRECTIONS[program.direction]
    key = {i: -(ux * objs[i].cx + uy * objs[i].cy) for i in members}  # smaller = further towards direction
    sure, maybe = set(), set()
    for i in members:
        before = sum(key[i] - key[j] >= m for j in members if j != i)  # surely ahead of i
        not_after = sum(key[j] - key[i] < m for j in members if j != i)  # possibly ahead of i
        if before <= program.k - 1 <= not_after:
            maybe.add(i)
            if before == not_after and _in_corner(objs[i], program.direction, scene):
                sure.add(i)
    return Match(frozenset(sure), frozenset(maybe))


def _in_corner(obj: Any, direction: str, scene: Any) -> bool:
    """A corner ("in the top left") also asserts an absolute place: the centre is clearly in that quadrant."""
    if direction not in CORNERS:
        return True
    ux, uy = DIRECTIONS[direction]
    half = MARGIN * scene.scale / 2
    return ux * (obj.cx - scene.width / 2) >= half and uy * (obj.cy - scene.height / 2) >= half


def _relate(program: Relate, scene: Any) -> Match:
    objs, m = scene.objects, MARGIN * scene.scale
    members = [i for i, o in enumerate(objs) if program.base.matches(o)]
    lm_sure, lm_maybe = evaluate(program.landmark, scene)
    if not (len(lm_sure) == 1 and lm_sure == lm_maybe):  # an ambiguous landmark leaves everything open
        return Match(frozenset(), frozenset(members))
    (lm,) = lm_sure
    members = [i for i in members if i != lm]
    if not members:
        return _NONE
    land = objs[lm]
    sure, maybe = set(), set()
    if program.relation == "next to":
        gap = {
            i: math.hypot(objs[i].cx - land.cx, objs[i].cy - land.cy) - objs[i].r - land.r for i in members
        }
        best = min(gap.values())
        near = NEAR * scene.scale
        for i in members:
            if gap[i] >= best + m or gap[i] >= near + m:
                continue  # surely not the nearest, or surely not near
            maybe.add(i)
            if gap[i] <= near and all(gap[j] >= gap[i] + m for j in members if j != i):
                sure.add(i)
        return Match(frozenset(sure), frozenset(maybe))
    ux, uy = RELATIONS[program.relation]
    for i in members:
        dx, dy = objs[i].cx - land.cx, objs[i].cy - land.cy
        along, across = ux * dx + uy * dy, abs(uy * dx - ux * dy)
        # The relation holds inside the 90° cone around the direction (along > across). Sure: well inside and
        # well away from the landmark; surely not: well outside; in between, a reader could go either way.
        if along - across <= -m / 2:
            continue
        maybe.add(i)
        if along >= m and along - across >= m / 2:
            sure.add(i)
    return Match(frozenset(sure), frozenset(maybe))


# ---------------------------------------------------------------------------------------------------------
# sampling programs for a target


def _attribute_subset(
    rng: np.random.Generator, obj: Any, p_kind: float, p_colour: float, p_size: float
) -> Select:
    return Select(
        kind=obj.kind if rng.random() < p_kind else None,
        colour=obj.colour if rng.random() < p_colour else None,
        size=obj.size if rng.random() < p_size else None,
    )


def _landmark_program(rng: np.random.Generator, scene: Any, j: int) -> Select | Rank | None:
    """A short unique description of object j: the fewest attributes that work, else a rank."""
    obj = scene.objects[j]
    subsets = [
        Select(kind=obj.kind),
        Select(obj.kind, colour=obj.colour),
        Select(obj.kind, size=obj.size),
        Select(obj.kind, obj.colour, obj.size),
    ]
    for program in subsets:
        if refers_uniquely(program, scene, j):
            return program
    for direction in rng.permutation(AXES):
        program = Rank(Select(kind=obj.kind), str(direction))
        if refers_uniquely(program, scene, j):
            return program
    return None


# Relations and ranks are favoured: they are what single attributes and image priors cannot solve.
FORM_WEIGHTS = {"select": 0.15, "rank": 0.3, "ordinal": 0.15, "relate": 0.4}


def _random_program(rng: np.random.Generator, scene: Any, target: int) -> Program | None:
    obj = scene.objects[target]
    form = str(rng.choice(list(FORM_WEIGHTS), p=list(FORM_WEIGHTS.values())))
    if form == "select":
        program = _attribute_subset(rng, obj, 0.8, 0.7, 0.6)
        return program if program != Select() else None
    base = _attribute_subset(rng, obj, 0.7, 0.5, 0.3)
    if form == "rank":
        return Rank(base, str(rng.choice(AXES + CORNERS, p=[0.17] * 4 + [0.08] * 4)))
    if form == "ordinal":
        return Rank(base, str(rng.choice(AXES)), int(rng.choice([2, 3], p=[0.75, 0.25])))
    others = [j for j in range(len(scene.objects)) if j != target]
    if not others:
        return None
    landmark = _landmark_program(rng, scene, int(rng.choice(others)))
    if landmark is None:
        return None
    return Relate(base, str(rng.choice(list(RELATIONS))), landmark)


def sample_programs(
    rng: np.random.Generator, scene: Any, target: int, n: int, tries: int = 40
) -> list[Program]:
    """Up to `n` distinct programs that each refer uniquely to `target` (random forms, random attributes)."""
    found: list[Program] = []
    for _ in range(tries):
        program = _random_program(rng, scene, target)
        if program is not None and program not in found and refers_uniquely(program, scene, target):
            found.append(program)
            if len(found) == n:
                break
    return found


# ---------------------------------------------------------------------------------------------------------
# wording

KIND_WORDS = {
    "circle": ("circle", "disc", "disk"),
    "oval": ("oval", "ellipse", "egg shape"),
    "ring": ("ring", "donut", "hoop"),
    "heart": ("heart",),
    "crescent": ("crescent", "moon", "crescent moon"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
    "hexagon": ("hexagon", "hex"),
    "cross": ("cross", "plus sign", "plus"),
}
COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "golden"),
    "green": ("green", "emerald"),
    "blue": ("blue", "cobalt"),
    "purple": ("purple", "violet"),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "big": ("big", "large", "huge")}
GENERIC_HEADS = ("shape", "object", "thing")

# "{det}" is "the " or nothing; "{np}" is "{det}{n}".
_EXTREME_SIDE = (
    "{np} on the {d}",
    "{det}{d}most {n}",
    "{np} furthest to the {d}",
    "{det}{d} {n}",
    "{np} on the far {d}",
)
_EXTREME_END = (
    "{np} at the {d}",
    "{det}{d}most {n}",
    "{det}{sup} {n}",
    "{det}{d} {n}",
    "{np} nearest the {d}",
)
_SUPERLATIVE = {"top": "highest", "bottom": "lowest"}
_CORNER = ("{np} in the {d} corner", "{det}{d} {n}", "{np} in the {d}", "{np} at the {d2}")
_ORDINAL = (
    "{det}{o} {n} from the {d}",
    "{det}{o} {n} from {d}",
    "{np} {o} from the {d}",
    "{det}{o} {n} counting from the {d}",
)
_ORDINAL_WORDS = {2: ("second", "2nd"), 3: ("third", "3rd")}
_RELATION_WORDS = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over", "just above"),
    "below": ("below", "under", "beneath", "underneath"),
    "next to": ("next to", "beside", "closest to", "nearest to"),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _nominal(rng: np.random.Generator, select: Select) -> str:
    """Adjectives and head noun without determiner: "big red circle", "red one", "shape"."""
    words = []
    if select.size:
        words.append(_pick(rng, SIZE_WORDS[select.size]))
    if select.colour:
        words.append(_pick(rng, COLOUR_WORDS[select.colour]))
    if select.kind:
        words.append(_pick(rng, KIND_WORDS[select.kind]))
    else:
        words.append(_pick(rng, GENERIC_HEADS + (("one",) if words else ())))
    return " ".join(words)


def describe(rng: np.random.Generator, program: Program, determiner: bool | None = None) -> str:
    """One wording of `program`, drawn from synonyms and templates (lower case, no punctuation)."""
    if determiner is None:  # RefCOCO sentences often drop the article ("left guy"); landmarks keep it
        determiner = bool(rng.random() < 0.8)
    if isinstance(program, Select):
        return ("the " if determiner else "") + _nominal(rng, program)
    det = "the " if determiner else ""
    n = _nominal(rng, program.base)
    np_ = det + n
    if isinstance(program, Rank):
        d = program.direction
        if program.k > 1:
            templates = _ORDINAL
        elif d in CORNERS:
            templates = _CORNER
        else:
            templates = _EXTREME_END if d in _SUPERLATIVE else _EXTREME_SIDE
        o = _pick(rng, _ORDINAL_WORDS[program.k]) if program.k > 1 else ""
        d2 = d.replace("top", "upper").replace("bottom", "lower")
        return _pick(rng, templates).format(np=np_, det=det, n=n, d=d, d2=d2, o=o, sup=_SUPERLATIVE.get(d))
    landmark = describe(rng, program.landmark, determiner=True)
    return f"{np_} {_pick(rng, _RELATION_WORDS[program.relation])} {landmark}"


def as_typed(rng: np.random.Generator, text: str) -> str:
    """`text` as typed by a person (the `raw` field): sometimes capitalised, sometimes with a full stop."""
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.2:
        text += "."
    return text


def to_refer_sentence(raw: str, sent_id: int) -> dict[str, Any]:
    """A refer-format sentence: `raw` as typed, `sent` lower-cased and tokenised, `tokens` its words."""
    tokens = re.findall(r"[a-z0-9]+", raw.lower())
    return {"tokens": tokens, "raw": raw, "sent_id": sent_id, "sent": " ".join(tokens)}
