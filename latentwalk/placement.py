"""Even motion: where a segment's frames go so that the picture changes by even steps.

Pure: no torch, no images. Equal steps of the walk parameter t do not give equal change on
screen (a seed walk often holds still, then jumps), so a smooth segment is placed in rounds:

1. the render loop asks `SegmentPlacer.next_round()` for positions, renders them, and can then
   tell the change (distance) between any two renders; the first round is a coarse look along
   the segment (t = 1/8, 2/8, ...);
2. from the renders so far the placer estimates how the change accumulates along t (a monotone
   cubic through the cumulative change at the renders) and aims the next round at the
   positions where the frames should be: equal shares of the change, or the shares of the
   easing profile. Targets already close to a render are served; the rest are shared out
   among the gaps by how much more than a frame's share each changes (D'Hondt's rule: batched
   sequential bisection of the largest gap), at most `ROUND` a round;
3. a gap whose change stays in one half when it is split is suspected of being a jump and is
   only halved, one render a round, until it splits (a fast but continuous change: it gets
   its frames) or is narrower than `self.jump_width` (a discontinuity of the model: a shape
   teleports; no placement splits it, so no more renders are spent on it);
4. when every target is served or the budget (25% more renders than frames, 50% for music) is spent,
   `choose()` picks the frames among the renders by dynamic programming, minimising the sum of
   squared changes between consecutive frames (divided by the profile), which for a given
   total makes them as even as possible. With `crossfade`, a discontinuity may take a few
   frame intervals filled with pixel blends of the renders on either side of it.

Decisions depend only on the distances measured, so a resumed render that replays the same
rounds takes the same decisions, and rounds do not depend on the batch size (up to the float
rounding of the renders themselves). Positions are on a dyadic lattice (multiples of 2**-24), exact as floats and as file names, so a later run of the
same walk with other frame counts finds the renders it shares with this one (at least the first
look and the keyframes).

latentblending's `blending_engine.py` does step 2 one render at a time (insert a branch in the
largest gap, measured by LPIPS); here the insertion is batched, aimed, and followed by a choice.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# Renders beyond the frames: the default costs at most 25% more renders than frames. A music
# profile (music.py) asks for large changes on the hits and nearly none between, which needs
# renders placed closely in the quiet passages: up to 50% more (scripts/bench_music.py).
EXTRA_RENDERS = 0.25
EXTRA_MUSIC = 0.5
# New positions one round asks for (after a first look at 7): a full batch on most GPUs, and
# few enough that each round is aimed by the last one's measurements.
ROUND = 8
# A gap whose largest part keeps this share of its change in half its width or less did not
# split: it is halved, one render a round, until it splits or is narrower than an eighth of a
# frame's share of the segment (rounded down to a power of two), where a change larger than
# twice a frame's is, at this frame count, a discontinuity of the model (a shape teleports).
STUCK_SHARE = 0.8
JUMP_SHARE = 8
JUMP_RATIO = 2.0
LATTICE = 2**24  # positions are multiples of 1/LATTICE
SPAN = 32  # the most renders between two consecutive frames that the final choice considers
# Crossfade: the blended frames of a segment's discontinuities are at most a quarter of its frames.
CROSSFADE_SHARE = 4

# A frame's target within this share of a frame's change from a render is already served.
TOLERANCE = 0.25

Distance = Callable[[float, float], float]


def quantize(t: float) -> float:
    return round(t * LATTICE) / LATTICE


def ease_profile(ease: Callable[[float], float], frames: int) -> list[float]:
    """The share of the segment's change each frame interval should carry: even for linear
    easing, smaller near the keyframes for ease-in-out."""
    cuts = [ease(j / frames) for j in range(frames + 1)]
    return [max(cuts[j + 1] - cuts[j], 1e-9) for j in range(frames)]


@dataclass(frozen=True)
class Pick:
    """One frame of a segment: the render at t, or a pixel blend of the renders at t and t2
    with weight alpha on t2 (a crossfade over a discontinuity)."""

    t: float
    t2: float | None = None
    alpha: float = 0.0

    @property
    def position(self) -> float:
        return self.t if self.t2 is None else (1 - self.alpha) * self.t + self.alpha * self.t2


@dataclass(frozen=True)
class Jump:
    """A discontinuity: between renders at lo and hi (hi - lo is tiny) the picture changes by
    `change`, `ratio` times what a frame of this segment should carry."""

    lo: float
    hi: float
    change: float
    ratio: float


def render_budget(frames: int, extra: float = EXTRA_RENDERS) -> int:
    """Interior renders a segment of `frames` frames may make (its first keyframe excluded)."""
    return frames - 1 + math.floor(frames * extra)


class SegmentPlacer:
    """Places the frames of one segment (t from 0, its first frame, to 1, the next keyframe,
    which belongs to the next segment). `distance(t1, t2)` gives the change between the
    renders at two positions the placer asked for (0 and 1 are always there)."""

    def __init__(
        self,
        frames: int,
        distance: Distance,
        profile: Sequence[float] | None = None,
        extra: float = EXTRA_RENDERS,
        crossfade: bool = False,
    ):
        if frames < 1:
            raise ValueError("a segment has at least one frame")
        self.n = frames
        self.budget = render_budget(frames, extra)
        self.profile = list(profile) if profile is not None else [1.0] * frames
        if len(self.profile) != frames:
            raise ValueError("one profile weight per frame")
        total = sum(self.profile)
        self.profile = [w / total for w in self.profile]
        self._cuts = [0.0]
        for w in self.profile:
            self._cuts.append(self._cuts[-1] + w)
        self._distance = distance
        self._cache: dict[tuple[float, float], float] = {}
        self.crossfade = crossfade
        self.samples = [0.0, 1.0]
        self._pending: list[float] = []
        self._split: dict[tuple[float, float], float] = {}  # gap split last round -> its change
        self._stuck: dict[tuple[float, float], int] = {}
        self.flagged: set[tuple[float, float]] = set()
        self.rounds = 0

    # ---- Measuring ----------------------------------------------------------------------------

    def distance(self, t1: float, t2: float) -> float:
        key = (t1, t2) if t1 <= t2 else (t2, t1)
        if key not in self._cache:
            d = float(self._distance(*key))
            if not (math.isfinite(d) and d >= 0):
                raise ValueError(f"the change between t={key[0]} and t={key[1]} is {d}, not a finite distance")
            self._cache[key] = d
        return self._cache[key]

    @property
    def jump_width(self) -> float:
        return 2.0 ** -math.ceil(math.log2(JUMP_SHARE * self.n))

    def fades(self, jumps: list["Jump"]) -> dict[tuple[float, float], int]:
        """The most frame intervals each discontinuity may take with a crossfade (1: none).
        The blended frames, double exposures, are few: a quarter of the segment's frames at
        most, shared out by D'Hondt's rule over the jumps' changes, and never so many that a
        step of the fade changes less than a frame elsewhere does."""
        fades = {(j.lo, j.hi): 1 for j in jumps}
        if not self.crossfade or not jumps:
            return fades
        per_frame = {(j.lo, j.hi): j.change / j.ratio for j in jumps}
        for _ in range(self.n // CROSSFADE_SHARE):
            best = max(jumps, key=lambda j: (j.change / (fades[(j.lo, j.hi)] + 1), j.lo))
            key = (best.lo, best.hi)
            if best.change / (fades[key] + 1) < per_frame[key]:
                break
            fades[key] += 1
        return fades

    @property
    def interior(self) -> int:
        return len(self.samples) - 2

    def gaps(self) -> list[tuple[float, float]]:
        return list(zip(self.samples, self.samples[1:]))

    # ---- Deciding what to render ----------------------------------------------------------------

    def next_round(self) -> list[float]:
        """Positions to render next; [] once the segment is settled. Everything returned before
        must be rendered (measurable) when this is called again."""
        if self._pending:
            self.samples = sorted(set(self.samples) | set(self._pending))
            self._pending = []
            self._update_stuck()
        positions = self._round()
        self._split = {}
        for t in positions:
            gap = self._gap_of(t)
            self._split.setdefault(gap, self.distance(*gap))
        self._pending = positions
        if positions:
            self.rounds += 1
        return positions

    def _round(self) -> list[float]:
        left = self.budget - self.interior
        if left <= 0:
            return []
        if self.rounds == 0:
            # A first look along the whole segment: the coarsest dyadic grid the budget allows.
            grid = 2 ** min(3, int(math.log2(left + 1)))
            return [quantize(k / grid) for k in range(1, grid)]
        gaps = self.gaps()
        changes = [self.distance(*g) for g in gaps]
        # What a frame should carry is set by the change that frames can spread: a discontinuity
        # found so far takes its own interval(s) and leaves the rest to the other frames.
        jumps = self.jumps()
        total = sum(d for g, d in zip(gaps, changes) if g not in self.flagged)
        frames = max(1, self.n - sum(self.fades(jumps).values()))
        over: dict[tuple[float, float], float] = {}  # > 1: the gap changes more than a frame should
        if total > 0:
            before = 0.0
            for gap, d in zip(gaps, changes):
                if gap in self.flagged:
                    continue
                middle = (before + d / 2) / total
                before += d
                over[gap] = d * frames / (total * self.n * self._weight_at(middle))
        else:
            over = {g: (g[1] - g[0]) * self.n for g in gaps if g not in self.flagged}
        for gap in gaps:  # too narrow to split: a discontinuity of the model if it is large
            if gap not in self.flagged and gap[1] - gap[0] <= self.jump_width and over.get(gap, 0.0) > 1.0:
                self.flagged.add(gap)
                over.pop(gap)
        return self._aimed(gaps, changes, over, left, frames)

    def _aimed(self, gaps, changes, over, left: int, frames: int) -> list[float]:
        """Positions where the frames should be: a monotone cubic (Fritsch-Carlson) through the
        cumulative change at the renders, inverted at each frame's share of the change. Targets
        already close to a render are satisfied; the others are shared out among the gaps."""
        cum = [0.0]
        for gap, d in zip(gaps, changes):
            cum.append(cum[-1] + (0.0 if gap in self.flagged else d))
        total = cum[-1]
        ts = self.samples
        candidates: dict[tuple[float, float], list[float]] = {}
        if total > 0:
            curve = _Monotone(ts, cum)
            for k in range(1, frames):
                level = total * _interp_cuts(self._cuts, k / frames)
                i = max(0, min(len(gaps) - 1, _bisect(cum, level)))
                gap = gaps[i]
                if gap in self.flagged or changes[i] <= 0:
                    continue
                step = total * self._weight_at(level / total) * self.n / frames
                near = min(abs(cum[i] - level), abs(cum[i + 1] - level))
                if near <= TOLERANCE * step:
                    continue
                t = quantize(curve.inverse(i, level))
                if gap[0] < t < gap[1]:
                    candidates.setdefault(gap, []).append(t)
        if not candidates and self.interior >= self.n - 1:
            return []
        if not candidates:  # even and yet fewer renders than frames: split the largest changes
            splittable = [(g, d) for g, d in zip(gaps, changes) if g not in self.flagged and g[1] - g[0] > self.jump_width]
            order = sorted(splittable or zip(gaps, changes), key=lambda item: (-item[1], -(item[0][1] - item[0][0]), item[0]))
            positions = []
            for gap, _ in order:
                if len(positions) >= min(ROUND, self.n - 1 - self.interior):
                    break
                positions += self._inside(gap, 1)
            return sorted(positions)
        # A suspected jump gets one render a round, and the renders its search may still need
        # are kept back from the rest, so that fine-tuning elsewhere cannot starve it.
        # (A small change that does not split is left to the others: not worth a search.)
        suspects = [g for g in candidates if self._stuck.get(g, 0) and over.get(g, 0.0) >= JUMP_RATIO]
        seats: dict[tuple[float, float], int] = {g: 1 for g in suspects[: min(left, ROUND)]}
        reserve = sum(math.ceil(math.log2(max(2.0, (g[1] - g[0]) / self.jump_width))) for g in suspects)
        slots = max(0, min(ROUND - len(seats), left - reserve))
        # The others by D'Hondt over the gaps' excess, each gap at most its candidates; while a
        # jump is being searched for, only where a gap carries clearly more than a frame's share.
        others = {g: c for g, c in candidates.items() if g not in seats}
        least = 1.5 if suspects else 0.0
        taken = 0
        while taken < slots:
            open_gaps = [g for g in others if seats.get(g, 0) < len(others[g])]
            if not open_gaps:
                break
            gap = max(open_gaps, key=lambda g: (over.get(g, 0.0) / (seats.get(g, 0) + 1), g))
            if over.get(gap, 0.0) / (seats.get(gap, 0) + 1) < least:
                break
            seats[gap] = seats.get(gap, 0) + 1
            taken += 1
        positions = []
        for gap, count in seats.items():
            if gap in suspects:
                new = self._inside(gap, 1)  # a suspected jump: halve it, no more
                if not new:
                    self.flagged.add(gap)
                positions += new
                continue
            mine = candidates[gap]
            positions += [mine[int((j + 0.5) * len(mine) / count)] for j in range(count)]
        return sorted(set(positions))

    def _weight_at(self, share: float) -> float:
        """The profile weight of the frame interval at this share of the segment's change."""
        k = bisect.bisect_left(self._cuts, share, 1, self.n) - 1
        return self.profile[min(max(k, 0), self.n - 1)]

    def suspect(self, lo: float, hi: float) -> bool:
        """Whether the gap between two renders is a suspected discontinuity: it did not split
        when halved, or it is flagged as a jump. (A render in it starts from its own noise: a
        mix of both sides would be a double exposure.)"""
        return (lo, hi) in self.flagged or bool(self._stuck.get((lo, hi)))

    def _inside(self, gap: tuple[float, float], count: int) -> list[float]:
        lo, hi = gap
        points = {quantize(lo + (hi - lo) * j / (count + 1)) for j in range(1, count + 1)}
        return sorted(p for p in points if lo < p < hi)

    def _gap_of(self, t: float) -> tuple[float, float]:
        for gap in self.gaps():
            if gap[0] < t < gap[1]:
                return gap
        raise ValueError(f"{t} is not inside a gap")

    def _update_stuck(self) -> None:
        """A split gap whose largest part kept most of its change is stuck one level deeper."""
        for (lo, hi), d in self._split.items():
            parts = [g for g in self.gaps() if lo <= g[0] and g[1] <= hi]
            if d <= 0 or not parts:
                continue
            largest = max(parts, key=lambda g: (self.distance(*g), g))
            if self.distance(*largest) >= STUCK_SHARE * d and largest[1] - largest[0] <= 0.55 * (hi - lo):  # half, give or take the lattice
                self._stuck[largest] = self._stuck.get((lo, hi), 0) + 1

    # ---- Choosing the frames ------------------------------------------------------------------

    def jumps(self) -> list[Jump]:
        """The discontinuities found: gaps that were given up on (or are too narrow to split)
        and carry more than JUMP_RATIO times what a frame of the rest of the segment carries
        there (by the profile: a frame on a hit of the music is meant to change a lot)."""
        gaps = self.gaps()
        changes = {g: self.distance(*g) for g in gaps}
        total = sum(changes.values())
        per_frame = total / self.n
        suspects = [g for g in gaps if g in self.flagged or (g[1] - g[0] <= self.jump_width and changes[g] > JUMP_RATIO * per_frame)]
        rest = sum(d for g, d in changes.items() if g not in suspects)
        per_frame = rest / max(1, self.n - len(suspects))
        found, before = [], 0.0
        for g in gaps:
            if g in suspects:
                # The frames whose shares of the change this gap's change would cover.
                here = per_frame * self._most_weight(before / total, (before + changes[g]) / total) * self.n if total > 0 else 0.0
                if changes[g] > JUMP_RATIO * here:
                    found.append(Jump(g[0], g[1], changes[g], changes[g] / here if here > 0 else math.inf))
            before += changes[g]
        return found

    def _most_weight(self, lo: float, hi: float) -> float:
        """The largest profile weight among the frames between these shares of the change."""
        first = max(0, min(self.n - 1, bisect.bisect_right(self._cuts, lo) - 1))
        last = max(first, min(self.n - 1, bisect.bisect_left(self._cuts, hi) - 1))
        return max(self.profile[first : last + 1])

    def choose(self) -> list[Pick]:
        """The segment's frames, first the keyframe at t=0, among the renders (and blends)."""
        points = self.samples
        m, n = len(points) - 1, self.n  # m gaps between renders; n frame intervals to fill
        if m < n:
            raise ValueError(f"{m + 1} renders cannot make {n} frames")
        fades = self.fades(self.jumps())
        # The most gaps one frame interval may cover: enough to leave out any renders (more
        # where crossfades take frame intervals without renders), within a band that keeps
        # long segments cheap (n intervals of SPAN gaps still reach the end).
        span = min(m - n + 1 + sum(q - 1 for q in fades.values()), SPAN)
        # squared[s - 1, i]: the squared change from render i to render i + s.
        squared = np.full((span, m + 1), np.inf)
        for step in range(1, span + 1):
            for i in range(m + 1 - step):
                squared[step - 1, i] = self.distance(points[i], points[i + step]) ** 2
        fade_from = [(i, fades[(points[i], points[i + 1])]) for i in range(m) if fades.get((points[i], points[i + 1]), 1) > 1]
        # cost[k, j]: the least sum over the first k intervals ending at render j; came_from and
        # faded say how it got there (a render i, over q intervals: q > 1 is a crossfade).
        cost = np.full((n + 1, m + 1), np.inf)
        came_from = np.zeros((n + 1, m + 1), dtype=np.int64)
        faded = np.ones((n + 1, m + 1), dtype=np.int64)
        cost[0, 0] = 0.0
        for k in range(n):
            here = cost[k]
            for step in range(1, span + 1):
                candidate = here[: m + 1 - step] + squared[step - 1, : m + 1 - step] / self.profile[k]
                better = candidate < cost[k + 1, step:]
                cost[k + 1, step:][better] = candidate[better]
                came_from[k + 1, step:][better] = np.nonzero(better)[0]
                faded[k + 1, step:][better] = 1
            for i, most in fade_from:
                if not math.isfinite(here[i]):
                    continue
                d = self.distance(points[i], points[i + 1])
                for q in range(2, min(most, n - k) + 1):
                    c = here[i] + sum((d / q) ** 2 / self.profile[k + s] for s in range(q))
                    if c < cost[k + q, i + 1]:
                        cost[k + q, i + 1], came_from[k + q, i + 1], faded[k + q, i + 1] = c, i, q
        if not math.isfinite(cost[n, m]):
            raise ValueError(f"no way to choose {n} frames from {m + 1} renders")
        picks: list[Pick] = []
        k, j = n, m
        while k > 0:
            i, q = int(came_from[k, j]), int(faded[k, j])
            lo, hi = points[i], points[j]
            picks[:0] = [Pick(lo)] + [Pick(lo, hi, s / q) for s in range(1, q)]
            k, j = k - q, i
        return picks


def _bisect(values: list[float], x: float) -> int:
    """The i with values[i] <= x < values[i + 1] (values ascending)."""
    lo, hi = 0, len(values) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if values[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo


def _interp_cuts(cuts: list[float], x: float) -> float:
    """The profile's cumulative share at x in [0, 1] of the frames, linear between frames."""
    position = x * (len(cuts) - 1)
    k = min(int(position), len(cuts) - 2)
    return cuts[k] + (position - k) * (cuts[k + 1] - cuts[k])


class _Monotone:
    """A monotone piecewise cubic through (x, y) (Fritsch and Carlson, 1980), and its inverse."""

    def __init__(self, x: list[float], y: list[float]):
        self.x, self.y = x, y
        h = [b - a for a, b in zip(x, x[1:])]
        delta = [(y[i + 1] - y[i]) / h[i] for i in range(len(h))]
        slopes = [delta[0]] + [0.0] * (len(x) - 2) + [delta[-1]]
        for i in range(1, len(x) - 1):
            if delta[i - 1] > 0 and delta[i] > 0:
                w1, w2 = 2 * h[i] + h[i - 1], h[i] + 2 * h[i - 1]
                slopes[i] = (w1 + w2) / (w1 / delta[i - 1] + w2 / delta[i])
        for i in range(len(h)):  # ends: keep each piece monotone
            if delta[i] == 0:
                slopes[i] = slopes[i + 1] = 0.0
            else:
                slopes[i] = min(slopes[i], 3 * delta[i])
                slopes[i + 1] = min(slopes[i + 1], 3 * delta[i])
        self.h, self.slopes = h, slopes

    def value(self, i: int, s: float) -> float:
        h, y, m = self.h[i], self.y, self.slopes
        s2, s3 = s * s, s * s * s
        return (2 * s3 - 3 * s2 + 1) * y[i] + (s3 - 2 * s2 + s) * h * m[i] + (-2 * s3 + 3 * s2) * y[i + 1] + (s3 - s2) * h * m[i + 1]

    def inverse(self, i: int, level: float) -> float:
        """The x in piece i where the curve reaches `level` (by bisection: it is monotone)."""
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if self.value(i, mid) < level:
                lo = mid
            else:
                hi = mid
        return self.x[i] + (lo + hi) / 2 * self.h[i]
