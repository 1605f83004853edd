"""The schedule is pure Python: these tests need no model and run in milliseconds."""

import math

import pytest

from latentwalk.errors import BadInput
from latentwalk.schedule import (
    EASINGS,
    Keyframe,
    batched,
    check_walk,
    parse_prompts,
    parse_seeds,
    parse_size,
    plan_stills,
    plan_walk,
    segment_lengths,
)


def keys(n, **kw):
    return [Keyframe(f"p{i}", i, **kw) for i in range(n)]


@pytest.mark.parametrize("name", sorted(EASINGS))
def test_easings_start_at_0_end_at_1_and_never_go_back(name):
    ease = EASINGS[name]
    assert ease(0) == 0
    assert ease(1) == pytest.approx(1, abs=1e-12)
    values = [ease(i / 100) for i in range(101)]
    assert all(b > a for a, b in zip(values, values[1:]))


def test_ease_in_out_is_slow_at_the_ends_and_fast_in_the_middle():
    ease = EASINGS["ease-in-out"]
    assert ease(0.1) < 0.1 and ease(0.5) == pytest.approx(0.5) and ease(0.9) > 0.9


def test_open_walk_has_no_duplicate_frame_at_boundaries_and_ends_on_last_keyframe():
    plan = plan_walk([3, 3], loop=False)
    assert [(f.a, f.b, round(f.t, 6)) for f in plan] == [
        (0, 1, 0.0), (0, 1, 0.333333), (0, 1, 0.666667),
        (1, 2, 0.0), (1, 2, 0.333333), (1, 2, 0.666667),
        (2, 2, 0.0),
    ]  # fmt: skip
    assert [f.index for f in plan] == list(range(7))


def test_loop_walks_back_to_the_first_keyframe_without_repeating_it():
    plan = plan_walk([2, 2, 2], loop=True)
    assert len(plan) == 6
    assert (plan[-1].a, plan[-1].b) == (2, 0) and plan[-1].t == 0.5
    assert plan[0].a == 0 and plan[0].t == 0


def test_easing_applies_within_each_segment():
    plan = plan_walk([4], loop=False, easing="ease-in-out")
    assert [round(f.t, 6) for f in plan] == [0.0, round((1 - math.cos(math.pi / 4)) / 2, 6), 0.5, round((1 - math.cos(3 * math.pi / 4)) / 2, 6), 0.0]


def test_stills_are_exactly_the_keyframes():
    assert [(f.a, f.b, f.t) for f in plan_stills(3)] == [(0, 0, 0.0), (1, 1, 0.0), (2, 2, 0.0)]


def test_segment_lengths_default_and_own():
    ks = keys(3)
    ks[1] = Keyframe("p1", 1, frames=5)
    assert segment_lengths(ks, loop=False, frames=4) == [4, 5]
    assert segment_lengths(ks, loop=True, frames=4) == [4, 5, 4]


def test_duration_is_shared_evenly_and_counts_the_final_frame():
    # 25 frames in all: 24 between 3 segments (open walk of 4 keyframes) plus the last keyframe.
    assert segment_lengths(keys(4), loop=False, total=25) == [8, 8, 8]
    assert segment_lengths(keys(4), loop=False, total=27) == [9, 9, 8]
    assert segment_lengths(keys(3), loop=True, total=10) == [4, 3, 3]
    ks = keys(3)
    ks[0] = Keyframe("p0", 0, frames=10)
    assert segment_lengths(ks, loop=False, total=16) == [10, 5]
    assert len(plan_walk(segment_lengths(keys(4), False, total=27), False)) == 27


def test_duration_too_short_for_the_segments_is_an_error():
    with pytest.raises(BadInput, match="too few for 3 segments"):
        segment_lengths(keys(4), loop=False, total=3)


def test_duration_that_contradicts_every_segment_is_an_error():
    ks = [Keyframe("a", 1, frames=5), Keyframe("b", 2)]
    with pytest.raises(BadInput, match="every segment sets its own frames"):
        segment_lengths(ks, loop=False, total=20)


def test_batched_keeps_order_and_remainder():
    assert [[f.index for f in b] for b in batched(plan_walk([2, 2], False), 2)] == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize(
    "text, seeds",
    [("1,2,3", [1, 2, 3]), (" 7 ", [7]), ("1-3,9", [1, 2, 3, 9]), ("0", [0]), ("4,1", [4, 1])],
)
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "1,,2", "-1", "1.5", "3-1", "0-99999", str(2**63)])
def test_parse_seeds_rejects(text):
    with pytest.raises(BadInput, match="seed"):
        parse_seeds(text)


def test_parse_size():
    assert parse_size("512x768") == (512, 768)
    assert parse_size("64") == (64, 64)
    for bad in ["513x512", "0", "axb", "512x", "16384"]:
        with pytest.raises(BadInput, match="--size"):
            parse_size(bad)


PROMPTS = """\
# a story in three keyframes
a castle at dawn | seed=7 | frames=60

a castle at noon|negative=blurry, dark
  a castle at night | seed=9
"""


def test_parse_prompts_reads_options_and_skips_comments_and_blanks():
    ks = parse_prompts(PROMPTS, default_seed=3, default_negative="ugly", source="castle.txt")
    assert ks == [
        Keyframe("a castle at dawn", 7, "ugly", 60, line=2),
        Keyframe("a castle at noon", 3, "blurry, dark", None, line=4),
        Keyframe("a castle at night", 9, "ugly", None, line=5),
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ("a castle | sed=3", "castle.txt:2: expected key=value with key one of seed, frames, negative, at, image; got 'sed=3'"),
        ("a castle | seed", "castle.txt:2: expected key=value"),
        ("a castle | seed=x", "castle.txt:2: seed must be a whole number"),
        ("a castle | seed=-4", "castle.txt:2: seed must be a whole number"),
        ("a castle | frames=0", "castle.txt:2: frames must be a whole number from 1"),
        ("a castle | frames=2.5", "castle.txt:2: frames must be a whole number from 1"),
        ("a castle | seed=1 | seed=2", "castle.txt:2: seed= given twice"),
        ("| seed=1", "castle.txt:2: the line has options but no prompt"),
    ],
)
def test_parse_prompts_errors_name_the_line(line, message):
    with pytest.raises(BadInput) as error:
        parse_prompts(f"first line\n{line}\n", 0, source="castle.txt")
    assert str(error.value).startswith(message)


def test_parse_prompts_with_nothing_in_it():
    with pytest.raises(BadInput, match="no prompts"):
        parse_prompts("# only a comment\n\n   \n", 0)


def test_check_walk():
    with pytest.raises(BadInput, match="at least two seeds"):
        check_walk(keys(1), False, "seeds")
    with pytest.raises(BadInput, match="identical"):
        check_walk([Keyframe("a", 1), Keyframe("a", 1)], False, "seeds")
    with pytest.raises(BadInput, match="identical"):  # the loop's closing segment
        check_walk([Keyframe("a", 1), Keyframe("a", 2), Keyframe("a", 1)], True, "seeds")
    check_walk([Keyframe("a", 1), Keyframe("a", 2), Keyframe("a", 1)], False, "seeds")
    with pytest.raises(BadInput, match="line 3: frames= on the last keyframe"):
        check_walk([Keyframe("a", 1, line=1), Keyframe("b", 1, frames=4, line=3)], False, "prompts")
