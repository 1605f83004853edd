"""Even-motion placement on synthetic distance functions: no model, milliseconds."""

import math

import pytest

from latentwalk.placement import LATTICE, SegmentPlacer, ease_profile, render_budget
from latentwalk.schedule import ease_in_out


def place(f, frames=24, **options):
    """Run a placer to the end against the 'picture' f(t) (a number; change = |f(t2) - f(t1)|).
    Returns the placer, its picks and the change between consecutive frames (to the next keyframe)."""
    placer = SegmentPlacer(frames, lambda a, b: abs(f(b) - f(a)), **options)
    asked = []
    while positions := placer.next_round():
        assert all(0 < t < 1 and t * LATTICE == int(t * LATTICE) for t in positions)
        assert not set(positions) & set(asked), "a position is never asked for twice"
        asked += positions
    picks = placer.choose()
    values = [f(p.t) if p.t2 is None else (1 - p.alpha) * f(p.t) + p.alpha * f(p.t2) for p in picks] + [f(1.0)]
    changes = [abs(b - a) for a, b in zip(values, values[1:])]
    return placer, picks, changes


def cv(changes):
    mean = sum(changes) / len(changes)
    return math.sqrt(sum((c - mean) ** 2 for c in changes) / len(changes)) / mean


def uniform_cv(f, frames=24):
    values = [f(j / frames) for j in range(frames + 1)]
    return cv([abs(b - a) for a, b in zip(values, values[1:])])


def test_a_ramp_is_placed_evenly_and_starts_on_the_keyframe():
    placer, picks, changes = place(lambda t: t)
    assert len(picks) == 24 and picks[0].t == 0.0
    assert cv(changes) < 1e-5  # exact up to the 2**-24 lattice
    assert placer.interior <= render_budget(24) == 23 + 6


def test_a_flat_stretch_gets_no_frames_it_does_not_need():
    f = lambda t: max(0.0, t - 0.7) / 0.3  # still for 70% of the walk, then moving  # noqa: E731
    placer, picks, changes = place(f)
    assert uniform_cv(f) > 1.3 and cv(changes) < uniform_cv(f) / 3
    assert sum(1 for p in picks if p.t < 0.7) <= 3  # the still part is not worth frames
    assert placer.jumps() == []


def test_a_steep_but_continuous_change_is_followed():
    f = lambda t: t**4  # noqa: E731
    _, _, changes = place(f)
    assert cv(changes) < 0.2 < uniform_cv(f)


def test_a_step_is_a_discontinuity_found_without_spending_the_budget():
    f = lambda t: 0.2 * t + (1.0 if t > 0.4321 else 0.0)  # noqa: E731
    placer, picks, changes = place(f, crossfade=False)
    jumps = placer.jumps()
    assert len(jumps) == 1 and jumps[0].lo < 0.4321 < jumps[0].hi and jumps[0].hi - jumps[0].lo < 1 / 64
    assert jumps[0].change == pytest.approx(1.0, abs=0.01)
    assert placer.interior <= render_budget(24)
    # Everything but the jump is even: the jump is one frame interval, the rest share the ramp.
    rest = sorted(changes)[:-1]
    assert cv(rest) < 0.35


def test_a_crossfade_spreads_a_discontinuity_over_blended_frames():
    f = lambda t: 0.2 * t + (1.0 if t > 0.4321 else 0.0)  # noqa: E731
    _, _, hard = place(f, crossfade=False)
    placer, picks, soft = place(f, crossfade=True)
    blends = [p for p in picks if p.t2 is not None]
    assert 1 <= len(blends) <= 24 // 4
    jump = placer.jumps()[0]
    assert all((p.t, p.t2) == (jump.lo, jump.hi) and 0 < p.alpha < 1 for p in blends)
    assert max(soft) < max(hard) / 2 and cv(soft) < cv(hard) / 2


def test_nothing_changes_still_gives_every_frame():
    placer, picks, _ = place(lambda t: 0.0)
    assert len(picks) == 24 and placer.interior >= 23 and placer.jumps() == []


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 7, 24, 100])
def test_any_length_gets_its_frames_within_the_budget(frames):
    placer, picks, _ = place(lambda t: t**2, frames=frames)
    assert len(picks) == frames and placer.interior <= render_budget(frames)
    positions = [p.position for p in picks]
    assert positions == sorted(positions) and positions[0] == 0.0


def test_easing_sets_the_target_profile():
    _, picks, changes = place(lambda t: t, profile=ease_profile(ease_in_out, 24))
    # Slow near the keyframes, fast between.
    assert changes[0] < changes[12] / 4 and changes[-1] < changes[12] / 4


def test_the_same_distances_give_the_same_decisions():
    f = lambda t: math.sin(7 * t) + (0.5 if t > 0.61 else 0)  # noqa: E731
    first = place(f, crossfade=True)[1]
    assert place(f, crossfade=True)[1] == first


def test_placement_is_quick():
    import time

    started = time.perf_counter()
    place(lambda t: t**3 + (1 if t > 0.3 else 0), frames=240, crossfade=True)
    assert time.perf_counter() - started < 20  # a generous bound: this is no benchmark
