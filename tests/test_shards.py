"""--shard K/N and concat: one render split across machines gives the video one machine makes."""

import json
import random
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

from latentwalk.errors import BadInput
from latentwalk.schedule import Shard, parse_shard, shard_of

WALK = ("seed-walk", "a large red circle on a blue background", "--seeds", "1,2,3,4", "--frames", "4", "--preset", "shapes", "--steps", "4")


def test_shards_split_whole_segments_or_frames_into_even_parts():
    # 4 segments of 24: the cuts nearest a third and two thirds of the frames.
    parts = [shard_of(k, 3, [24, 24, 24, 24], loop=False, by_segments=True) for k in (1, 2, 3)]
    assert parts == [Shard(1, 3, 0, 24, 0, 1), Shard(2, 3, 24, 72, 1, 3), Shard(3, 3, 72, 97, 3, 4)]
    # The last keyframe's frame goes to the last part; a loop has none.
    assert shard_of(2, 2, [10, 10], loop=True, by_segments=True) == Shard(2, 2, 10, 20, 1, 2)
    # By frames: contiguous, every frame once.
    frames = [shard_of(k, 4, [10], loop=False, by_segments=False) for k in (1, 2, 3, 4)]
    assert [(s.first, s.end) for s in frames] == [(0, 2), (2, 5), (5, 8), (8, 11)]
    for n in range(1, 7):  # every frame in exactly one part, whatever the lengths
        lengths = [random.Random(n).randint(1, 30) for _ in range(6)]
        parts = [shard_of(k, n, lengths, False, True) for k in range(1, n + 1)]
        assert [p.first for p in parts] == [0] + [p.end for p in parts[:-1]] and parts[-1].end == sum(lengths) + 1
        assert all(p.first < p.end for p in parts)
    with pytest.raises(BadInput, match="split by whole segments .* this one has 1; use at most 1 shard, "):
        shard_of(1, 2, [24], loop=False, by_segments=True)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(BadInput, match="--shard must be K/N"):
            parse_shard(bad)


def frames(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("frame_*.png"))}


def test_a_walk_split_in_three_shards_and_joined_is_the_unsplit_walk(run, tmp_path):
    run(*WALK, "-o", "whole.mp4", "--frames-dir", "whole")
    for k in (1, 2, 3):
        summary = json.loads(run(*WALK, "--shard", f"{k}/3", "-o", f"part{k}.mp4", "--frames-dir", f"part{k}", "--json").stdout)
        assert summary["shard"]["k"] == k
    whole = frames(tmp_path / "whole")
    parts = [frames(tmp_path / f"part{k}") for k in (1, 2, 3)]
    # Each part holds its own frames, named by their place in the whole video, bit for bit the
    # unsplit walk's (the placement's batches at the preset's batch size 8 included).
    assert sorted(name for part in parts for name in part) == sorted(whole) and len(whole) == 13
    assert all(part[name] == whole[name] for part in parts for name in part)
    # Joined in any order, without re-encoding: the frame count, and each frame within codec tolerance.
    joined = json.loads(run("concat", "part3.mp4", "part1.mp4", "part2.mp4", "-o", "joined.mp4", "--json").stdout)
    assert joined["frames"] == 13 and joined["parts"] == 3
    a, b = iio.imread(tmp_path / "whole.mp4"), iio.imread(tmp_path / "joined.mp4")
    assert a.shape == b.shape == (13, 64, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0
    # The joined video's manifest is the whole render's: it renders the same frames again.
    data = json.loads((tmp_path / "joined.mp4.json").read_text())
    assert data["job"]["shard"] is None and len(data["job"]["plan"]) == 13
    run("render", "joined.mp4.json", "-o", "again.mp4", "--frames-dir", "again")
    assert frames(tmp_path / "again") == whole

    def refused(*segments) -> str:
        return run("concat", *segments, "-o", "x.mp4", code=2).output

    assert refused("part1.mp4", "part3.mp4") == "Error: part 2 of 3 missing\n"
    assert refused("part1.mp4", "part2.mp4", "part2.mp4", "part3.mp4") == "Error: 'part2.mp4' and 'part2.mp4' are both part 2 of 3\n"
    assert refused("whole.mp4", "part2.mp4") == "Error: 'whole.mp4' is a whole video, not a part rendered with --shard\n"
    other = (*WALK[:3], "1,2,3,5", *WALK[4:])  # another render's part 3
    run(*other, "--shard", "3/3", "-o", "other3.mp4")
    assert refused("part1.mp4", "part2.mp4", "other3.mp4") == "Error: 'other3.mp4' is part of another render than 'part1.mp4'\n"
    shutil.copy(tmp_path / "part2.mp4", tmp_path / "lost.mp4")  # a segment without its manifest
    assert refused("part1.mp4", "lost.mp4").startswith("Error: segment 'lost.mp4' has no manifest beside it")
    assert not (tmp_path / "x.mp4").exists()


def test_a_uniform_walk_splits_by_frames_and_a_smooth_one_needs_segments(run, tmp_path):
    uniform = (*WALK[:3], "1,2", "--frames", "7", *WALK[6:], "--no-smooth", "--loop")
    run(*uniform, "-o", "whole.mp4", "--frames-dir", "whole")
    for k in (1, 2, 3):
        run(*uniform, "--shard", f"{k}/3", "-o", f"part{k}.mp4", "--frames-dir", f"part{k}")
    parts = [frames(tmp_path / f"part{k}") for k in (1, 2, 3)]
    assert {name: data for part in parts for name, data in part.items()} == frames(tmp_path / "whole")
    assert [len(p) for p in parts] == [4, 5, 5]
    run("concat", "part1.mp4", "part2.mp4", "part3.mp4", "-o", "joined.mp4")
    assert iio.imread(tmp_path / "joined.mp4").shape[0] == 14
    smooth = run(*WALK[:3], "1,2", *WALK[4:], "--shard", "2/2", code=2).output
    assert smooth.startswith("Error: --shard 2/2: an evenly placed walk is split by whole segments")
    assert run(*WALK, "--shard", "1/2", "-o", "x.gif", code=2).output.startswith("Error: --shard: a segment is an .mp4 or .webm")


def test_a_local_ray_with_two_cpu_workers_renders_the_same_video(run, cli, tmp_path):
    pytest.importorskip("ray")
    run(*WALK, "-o", "whole.mp4")
    # A part an earlier run finished (beside the output, hidden) is joined, not rendered again.
    run(*WALK, "--shard", "1/2", "-o", ".ray.part1of2.mp4")
    # The Ray driver in a process of its own, as users run it: Ray's native threads abort an
    # interpreter that started and stopped Ray among other work (pytest's) when it exits.
    result = cli(*WALK, "--ray", "local", "--workers", "2", "-o", "ray.mp4", "--json")
    assert "latentwalk: part 1/2 is already rendered: .ray.part1of2.mp4" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == 13 and summary["parts"] == 2 and summary["ray"] == "local"
    a, b = iio.imread(tmp_path / "whole.mp4"), iio.imread(tmp_path / "ray.mp4")
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 2.0
    # The parts' segments are gone; the joined video's manifest is the whole render's.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ray")) == []
    assert json.loads((tmp_path / "ray.mp4.json").read_text())["job"]["shard"] is None
    assert run(*WALK, "--workers", "2", code=2).output == "Error: --workers needs --ray\n"
    assert run(*WALK, "--ray", "local", "--shard", "1/2", code=2).output == "Error: --ray splits the walk itself; give --ray or --shard, not both\n"
