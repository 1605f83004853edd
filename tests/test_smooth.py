"""Smooth walks end to end on builtin:shapes (pictures that mean something), in process."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import read_png, read_video

SHAPES = ["--preset", "shapes"]
STORY = "a large purple triangle on a black background | seed=3\na small green circle on a gray background | seed=3\n"


def summary_of(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def frames_in(folder: Path) -> list[np.ndarray]:
    return [read_png(p) for p in sorted(folder.glob("frame_*.png"))]


def test_a_smooth_walk_is_even_within_its_budget_and_passes_through_generate(run, tmp_path):
    (tmp_path / "story.txt").write_text(STORY)
    smooth = summary_of(run("prompt-walk", "story.txt", *SHAPES, "--frames", "16", "-o", "s.mp4", "--frames-dir", "s", "--json", "-q"))
    uniform = summary_of(run("prompt-walk", "story.txt", *SHAPES, "--frames", "16", "--no-smooth", "-o", "u.mp4", "--json", "-q"))
    assert smooth["frames"] == uniform["frames"] == 17
    assert uniform["renders"] == 17 and 17 <= smooth["renders"] <= 17 * 1.25
    assert smooth["smooth"] is True and uniform["smooth"] is False
    assert smooth["keyframe_frames"] == [0, 16]
    assert set(smooth["smoothness"]) >= {"frames", "mean", "cv", "max_over_mean", "istd"}
    # This walk morphs a triangle into a circle in a few uniform frames: placement evens it.
    assert smooth["smoothness"]["cv"] < uniform["smoothness"]["cv"] / 2
    # The frames folder holds exactly the video's frames, in order; renders in a subfolder.
    frames = frames_in(tmp_path / "s")
    assert len(frames) == 17 and (tmp_path / "s" / "renders").is_dir()
    video, _ = read_video(tmp_path / "s.mp4")
    assert len(video) == 17
    # Keyframes stay where they were and are generate's pictures, bit for bit (they are
    # rendered in generate's batches: one prompt at a time).
    run("generate", "a large purple triangle on a black background", "--seeds", "3", *SHAPES, "-o", "first.png", "-q")
    run("generate", "a small green circle on a gray background", "--seeds", "3", *SHAPES, "-o", "last.png", "-q")
    assert np.array_equal(frames[0], read_png(tmp_path / "first.png"))
    assert np.array_equal(frames[16], read_png(tmp_path / "last.png"))
    # The manifest has every frame's position, in order, and the same statistics.
    manifest = json.loads((tmp_path / "s.mp4.json").read_text())
    plan = manifest["job"]["plan"]
    assert [entry[0] for entry in plan] == list(range(17)) and manifest["job"]["smooth"] is True
    positions = [e[3] if len(e) == 4 else (1 - e[5]) * e[3] + e[5] * e[4] for e in plan[:16]]
    assert positions == sorted(positions) and positions[0] == 0.0
    assert manifest["smoothness"] == smooth["smoothness"] and manifest["keyframe_frames"] == [0, 16]


def test_a_smooth_seed_walk_s_keyframes_are_generate_s_bit_for_bit(run, tmp_path):
    run("seed-walk", "a large red circle on a blue background", "--seeds", "1,2", *SHAPES, "--frames", "8", "-o", "w.mp4", "--frames-dir", "f", "-q")
    run("generate", "a large red circle on a blue background", "--seeds", "1,2", *SHAPES, "-o", "stills", "-q")
    frames = frames_in(tmp_path / "f")
    assert np.array_equal(frames[0], read_png(tmp_path / "stills" / "a-large-red-circle-on-a-blue-background-1.png"))
    assert np.array_equal(frames[8], read_png(tmp_path / "stills" / "a-large-red-circle-on-a-blue-background-2.png"))


def test_a_manifest_renders_the_same_frames_without_placing_again(run, tmp_path, monkeypatch):
    run("seed-walk", "a large red circle on a blue background", "--seeds", "1,2", *SHAPES, "--frames", "12", "-o", "w.mp4", "--frames-dir", "a", "-q")
    import latentwalk.placement

    def refuse(*args, **kwargs):
        raise AssertionError("a manifest's walk is not placed again")

    monkeypatch.setattr(latentwalk.placement, "SegmentPlacer", refuse)
    summary = summary_of(run("render", "w.mp4.json", "-o", "again.mp4", "--frames-dir", "b", "--json", "-q"))
    assert summary["frames"] == 13
    for x, y in zip(frames_in(tmp_path / "a"), frames_in(tmp_path / "b"), strict=True):
        assert np.array_equal(x, y)
    # ... and the manifest that re-render wrote renders too, to the same job.
    first = json.loads((tmp_path / "w.mp4.json").read_text())["job"]
    again = json.loads((tmp_path / "again.mp4.json").read_text())["job"]
    assert again["plan"] == first["plan"] and again["chunks"] == first["chunks"]  # so it renders the same again


def test_a_longer_run_of_the_same_walk_reuses_the_renders_it_shares(run, tmp_path):
    walk = ["seed-walk", "a small yellow square on a black background", "--seeds", "4,5", *SHAPES, "-o", "w.mp4", "--frames-dir", "f", "--json", "-q", "--overwrite"]
    first = summary_of(run(*walk, "--frames", "8"))
    assert first["resumed"] == 0
    second = summary_of(run(*walk, "--frames", "24"))
    # At least the keyframes and the first look along the segment (1/8, 2/8, ...) are shared.
    assert second["resumed"] >= 2 + 7 and second["frames"] == 25
    assert len(list((tmp_path / "f").glob("frame_*.png"))) == 25
    # Back to fewer frames: the folder still holds exactly the video's frames.
    third = summary_of(run(*walk, "--frames", "8"))
    assert third["resumed"] == third["renders"]  # nothing new to render
    assert len(list((tmp_path / "f").glob("frame_*.png"))) == 9


def test_no_smooth_spaces_frames_evenly_in_t(run, tmp_path):
    run("seed-walk", "a large red circle on a blue background", "--seeds", "1,2", *SHAPES, "--frames", "4", "--no-smooth", "-o", "u.mp4", "-q")
    plan = json.loads((tmp_path / "u.mp4.json").read_text())["job"]["plan"]
    assert [e[3] for e in plan] == [0.0, 0.25, 0.5, 0.75, 0.0]


def test_the_manifest_of_a_re_rendered_image_renders_again(run, tmp_path):
    """Issue 12's fix: a render of generate's third image wrote a manifest that did not render."""
    run("generate", "a large red circle on a blue background", "--seeds", "1,2,3", *SHAPES, "--batch-size", "2", "-o", "out", "-q")
    run("render", "out/a-large-red-circle-on-a-blue-background-3.png.json", "-o", "again.png", "-q")
    run("render", "again.png.json", "-o", "third.png", "-q")
    original = read_png(tmp_path / "out" / "a-large-red-circle-on-a-blue-background-3.png")
    assert np.array_equal(read_png(tmp_path / "again.png"), original)
    assert np.array_equal(read_png(tmp_path / "third.png"), original)
    assert json.loads((tmp_path / "third.png.json").read_text())["index"] == 2


def test_inspect_reads_a_smooth_walk_and_marks_its_keyframes(run, tmp_path):
    (tmp_path / "story.txt").write_text(STORY)
    summary = summary_of(run("prompt-walk", "story.txt", *SHAPES, "--frames", "8", "-o", "s.mp4", "--json", "-q"))
    measured = json.loads(run("inspect", "s.mp4", "--json", "--plot", "p.png").stdout)
    assert measured["frames"] == 9 and measured["keyframes"] == [0, 8]
    # The video's figures are the render's, up to H.264's loss.
    assert measured["mean"] == pytest.approx(summary["smoothness"]["mean"], rel=0.25)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_a_teleport_is_reported_and_crossfaded_unless_told_not_to(run, tmp_path):
    """Seeds 2 to 3 of this prompt: the circle jumps across the picture within 1/256 of the walk."""
    walk = ["seed-walk", "a large red circle on a blue background", "--seeds", "2,3", *SHAPES, "--json", "-q"]
    soft = summary_of(run(*walk, "-o", "soft.mp4"))
    hard = summary_of(run(*walk, "--no-crossfade", "-o", "hard.mp4"))
    for summary in (soft, hard):
        assert summary["discontinuities"], summary
        big = max(summary["discontinuities"], key=lambda j: j["change"])
        assert big["change"] > 20 and big["over_mean"] > 5 and 0 < big["frame"] < 24
    assert max(j["crossfade_frames"] for j in soft["discontinuities"]) >= 2
    assert all(j["crossfade_frames"] == 0 for j in hard["discontinuities"])
    # Crossfade frames are blends, recorded as such; the keyframes are not touched.
    plan = json.loads((tmp_path / "soft.mp4.json").read_text())["job"]["plan"]
    blends = [entry for entry in plan if len(entry) == 6]
    assert 2 <= len(blends) <= 24 // 4 and all(0 < entry[5] < 1 for entry in blends)
    assert plan[0][:4] == [0, 0, 1, 0.0] and plan[-1][:4] == [24, 1, 1, 0.0]
    assert soft["smoothness"]["max_over_mean"] < hard["smoothness"]["max_over_mean"] / 2
    manifest = json.loads((tmp_path / "hard.mp4.json").read_text())
    assert manifest["discontinuities"] == hard["discontinuities"]


def test_a_walk_that_comes_back_reuses_its_first_keyframe(run, tmp_path):
    """A -> B -> A with one seed: the last keyframe is the first one's picture, not a new render
    in a batch of two that no generate command makes."""
    (tmp_path / "back.txt").write_text("a large red circle on a blue background\na small yellow square on a blue background\na large red circle on a blue background\n")
    summary = summary_of(run("prompt-walk", "back.txt", *SHAPES, "--frames", "4", "--no-smooth", "-o", "b.mp4", "--frames-dir", "f", "--json", "-q"))
    frames = frames_in(tmp_path / "f")
    assert len(frames) == 9 and np.array_equal(frames[0], frames[8])
    run("generate", "a large red circle on a blue background", *SHAPES, "-o", "a.png", "-q")
    assert np.array_equal(frames[0], read_png(tmp_path / "a.png"))
    chunks = json.loads((tmp_path / "b.mp4.json").read_text())["job"]["chunks"]
    assert [0, 0, 0.0] in [p for c in chunks for p in c] and [2, 2, 0.0] not in [p for c in chunks for p in c]
    assert summary["renders"] == 9
    again = summary_of(run("render", "b.mp4.json", "-o", "again.mp4", "--frames-dir", "g", "--json", "-q"))
    assert again["frames"] == 9
    for x, y in zip(frames, frames_in(tmp_path / "g"), strict=True):
        assert np.array_equal(x, y)
