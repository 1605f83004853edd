"""Timing from music, on synthetic envelopes and beats: milliseconds, no audio decoded."""

import pytest

from latentwalk.errors import BadInput
from latentwalk.music import FLOOR, correlation, frame_envelope, keyframe_lengths, motion_profile
from latentwalk.schedule import parse_prompts, plan_walk


def spikes(times, seconds, rate=100.0):
    env = [0.0] * round(seconds * rate)
    for t in times:
        env[round(t * rate)] = 1.0
    return env


def test_a_hit_lands_on_the_interval_whose_change_shows_nearest_it():
    fps = 10.0
    # A hit at 1.02 s: frame 10 appears at 1.0 s, so the change into it (interval 9) shows it.
    env = frame_envelope(spikes([1.02], 3.0), 100.0, fps, 29, release=0.0)
    assert max(range(29), key=env.__getitem__) == 9 and env[9] == 1.0
    assert sum(env) == 1.0  # no release: a single interval
    # At 1.06 s it is nearer frame 11's start.
    env = frame_envelope(spikes([1.06], 3.0), 100.0, fps, 29, release=0.0)
    assert max(range(29), key=env.__getitem__) == 10


def test_the_envelope_attacks_at_once_and_releases_smoothly():
    env = frame_envelope(spikes([1.0], 3.0), 100.0, 10.0, 29, release=0.1)
    peak = env.index(1.0)
    assert env[:peak] == [0.0] * peak
    after = env[peak:peak + 5]
    assert after == sorted(after, reverse=True) and 0 < after[1] < 1 and after[4] < 0.05


def test_silence_gives_a_flat_profile_and_react_zero_is_even():
    lengths = [4, 6]
    assert motion_profile([0.0] * 10, lengths, 1.0) == pytest.approx([0.25] * 4 + [1 / 6] * 6)
    env = [0, 0, 1, 0, 0, 0, 0, 0.5, 0, 0]
    assert motion_profile(env, lengths, 0.0) == pytest.approx([0.25] * 4 + [1 / 6] * 6)


def test_react_blends_even_and_audio_shares_within_each_segment():
    env = [0, 0, 1, 0, 0.5, 0.5, 0, 0, 0, 0]
    full = motion_profile(env, [4, 6], 1.0)
    # Each segment's shares sum to 1; the hit takes nearly all, the rest the floor.
    assert sum(full[:4]) == pytest.approx(1) and sum(full[4:]) == pytest.approx(1)
    assert full[2] > 0.9 and min(full[:4]) == pytest.approx(FLOOR / 4 / sum([FLOOR / 4] * 3 + [1]))
    half = motion_profile(env, [4, 6], 0.5)
    assert half[2] == pytest.approx(0.5 / 4 + 0.5) and half[0] == pytest.approx(0.5 / 4)
    with pytest.raises(ValueError):
        motion_profile(env, [4, 5], 0.5)


def test_correlation():
    assert correlation([1, 2, 3, 4], [2, 4, 6, 8]) == 1.0
    assert correlation([1, 2, 3], [3, 2, 1, 9]) == -1.0  # the shorter sets the length
    assert correlation([1, 1, 1], [1, 2, 3]) is None and correlation([1], [1]) is None


def test_the_peer_s_way_moves_t_by_the_profile():
    plan = plan_walk([4], loop=False, profile=[0.1, 0.6, 0.2, 0.1])
    assert [f.t for f in plan] == pytest.approx([0.0, 0.1, 0.7, 0.9, 0.0]) and plan[-1].a == 1


# ---- Where keyframes fall ----------------------------------------------------------------------


def test_keyframes_spread_evenly_over_the_section():
    # 3 keyframes over 4 s at 10 fps: 40 frames, the last keyframe on the last one.
    assert keyframe_lengths(3, False, 10.0, [None] * 3, 4.0, 24) == [20, 19]
    # A loop returns to the first keyframe at the end of the section.
    assert keyframe_lengths(3, True, 10.0, [None] * 3, 4.0, 24) == [13, 14, 13]


def test_at_pins_keyframes_and_the_rest_spread_between():
    # at=1 on the second of four keyframes, the end at 4 s: the third halfway between.
    assert keyframe_lengths(4, False, 10.0, [None, 1.0, None, None], 4.0, 24) == [10, 14, 15]
    # No end known: after the last pin, --frames per segment.
    assert keyframe_lengths(3, False, 10.0, [0.0, 2.5, None], None, 24) == [25, 24]


def test_on_beats_puts_keyframe_k_on_beat_k_times_n():
    beats = [0.1 + 0.5 * i for i in range(12)]  # 120 bpm from 0.1 s
    # Keyframe 1 on beat 4 (2.1 s), keyframe 2 on beat 8 (4.1 s), where the video ends.
    assert keyframe_lengths(3, False, 10.0, [None] * 3, 6.0, 24, beats, every=4) == [21, 20]
    # A pin wins over its beat.
    assert keyframe_lengths(3, False, 10.0, [None, 1.0, None], 6.0, 24, beats, every=4) == [10, 31]
    with pytest.raises(BadInput, match=r"--on-beats 4 puts the last keyframe on beat 12, but the audio section has 12 beats"):
        keyframe_lengths(4, False, 10.0, [None] * 4, 6.0, 24, beats, every=4)
    with pytest.raises(BadInput, match="has 0 beats"):
        keyframe_lengths(2, False, 10.0, [None] * 2, 6.0, 24, [], every=1)


def test_bad_keyframe_times_name_their_line():
    with pytest.raises(BadInput, match=r"^line 1: the first keyframe starts the video: its at= must be 0, got 2$"):
        keyframe_lengths(2, False, 10.0, [2.0, None], 4.0, 24, lines=[1, 2])
    with pytest.raises(BadInput, match=r"^line 5: the keyframe at 1 s is not at least a frame after"):
        keyframe_lengths(3, False, 10.0, [None, 2.0, 1.0], 4.0, 24, lines=[1, 3, 5])
    with pytest.raises(BadInput, match=r"^line 3: at=9 is past the end of the video \(4 s\)$"):
        keyframe_lengths(2, False, 10.0, [None, 9.0], 4.0, 24, lines=[1, 3])
    with pytest.raises(BadInput, match="loop's return"):
        keyframe_lengths(2, True, 10.0, [None, 3.99], 4.0, 24, lines=[1, 2])


def test_prompts_files_take_at_but_not_with_frames():
    keyframes = parse_prompts("a | at=0\nb | at=2.5\nc\n", 0)
    assert [k.at for k in keyframes] == [0.0, 2.5, None]
    for bad in ("a | at=-1", "a | at=x", "a | at=nan", "a | at=inf"):
        with pytest.raises(BadInput, match="at= must be a time in seconds"):
            parse_prompts(bad, 0)
    with pytest.raises(BadInput, match=r"prompts:2: frames= and at= \(line 1\) both place keyframes"):
        parse_prompts("a | at=0\nb | frames=3\nc", 0)
