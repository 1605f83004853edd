"""Smoothness statistics on synthetic frames (exact), and `inspect` on real videos written with
our VideoWriter (uniform gray frames, whose levels survive H.264 4:2:0 to within a level)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import read_video
from latentwalk.errors import EXIT_USAGE, BadInput
from latentwalk.inspect import PALETTE, check_plot_path, format_table, inspect_video, plot
from latentwalk.smoothness import Motion, stats
from latentwalk.video import VideoWriter

KEYS = {"frames", "mean", "cv", "max_over_mean", "istd", "pdv", "smoothness_aid"}
W, H = 64, 48


def gray(level: int) -> np.ndarray:
    return np.full((H, W, 3), level, np.uint8)


def motion_of(levels) -> Motion:
    motion = Motion()
    for level in levels:
        motion.add(gray(level))
    return motion


def gray_video(path: Path, levels) -> Path:
    with VideoWriter(path, W, H, 24, crf=0) as writer:
        for level in levels:
            writer.write(gray(level))
    return path


def gini(d) -> float:
    """The definition, all pairs, to check the O(n log n) sum against."""
    d = np.asarray(d, float)
    return float(np.abs(d[:, None] - d[None, :]).sum() / (2 * d.size**2 * d.mean()))


# ---- smoothness: exact, in milliseconds ----------------------------------------------------------
def test_even_steps_are_perfectly_smooth():
    motion = motion_of([0, 10, 20, 30, 40])
    assert motion.changes == [10.0] * 4
    assert motion.l2 == pytest.approx([10 / 255] * 4)
    assert motion.summary() == {
        "frames": 5, "mean": 10.0, "cv": 0.0, "max_over_mean": 1.0, "istd": 0.0, "pdv": 0.0, "smoothness_aid": 1.0,
    }  # fmt: skip


def test_one_jump_gives_known_figures():
    summary = motion_of([0, 10, 20, 60, 70]).summary()  # changes 10, 10, 40, 10
    d = np.array([10, 10, 40, 10.0])
    assert summary["frames"] == 5
    assert summary["mean"] == 17.5
    assert summary["max_over_mean"] == round(40 / 17.5, 4)
    assert summary["cv"] == round(d.std() / 17.5, 4)
    assert summary["pdv"] == round((d / 17.5).var(), 4) == round((d.std() / 17.5) ** 2, 4)
    assert summary["smoothness_aid"] == round(1 - 180 / (2 * 16 * 17.5), 4)  # 6 ordered pairs differ by 30
    assert summary["istd"] == round(np.std(d / 255), 4)  # uniform frames: RMS = |step| / 255


def test_change_is_mean_absolute_difference_and_l2_is_rms():
    half = gray(0)
    half[:, : W // 2] = 255
    motion = Motion()
    motion.add(gray(0))
    motion.add(half)
    assert motion.changes == [127.5]
    assert motion.l2 == pytest.approx([np.sqrt(0.5)])


def test_gini_matches_its_definition():
    d = np.random.default_rng(0).exponential(5, 50)
    assert stats(d)["smoothness_aid"] == round(1 - gini(d), 4)


def test_degenerate_sequences_give_zeros_not_nan():
    for levels, frames in [([], 0), ([7], 1), ([7, 7, 7], 3)]:
        summary = motion_of(levels).summary()
        assert set(summary) == KEYS and summary["frames"] == frames
        assert summary == {"frames": frames, "mean": 0.0, "cv": 0.0, "max_over_mean": 0.0, "istd": 0.0, "pdv": 0.0, "smoothness_aid": 1.0}
        json.dumps(summary, allow_nan=False)


def test_stats_without_l2():
    summary = stats([2.0, 4.0])
    assert set(summary) == KEYS
    assert summary["frames"] == 3 and summary["istd"] == 0.0 and summary["mean"] == 3.0
    assert all(type(v) in (int, float) for v in summary.values())  # plain numbers, for JSON


def test_motion_refuses_a_frame_of_another_size():
    motion = motion_of([0])
    with pytest.raises(ValueError, match="shape"):
        motion.add(np.zeros((H, W + 1, 3), np.uint8))


# ---- inspect on real videos --------------------------------------------------------------------
def test_even_video(tmp_path):
    levels = range(15, 241, 25)  # 10 frames, 9 steps of 25
    result = inspect_video(gray_video(tmp_path / "even.mp4", levels))
    assert set(result) == KEYS | {"video", "changes", "keyframes"}
    assert result["video"] == str(tmp_path / "even.mp4")
    assert result["frames"] == 10 and len(result["changes"]) == 9
    assert result["changes"] == pytest.approx([25] * 9, abs=1.01)  # 4:2:0 round trip: a level either way
    assert result["mean"] == pytest.approx(25, rel=0.02)
    assert result["cv"] < 0.05
    assert result["max_over_mean"] == pytest.approx(1, abs=0.05)
    assert result["smoothness_aid"] > 0.97
    assert result["keyframes"] == []


def test_video_with_one_jump(tmp_path):
    levels = [20, 40, 60, 80, 160, 180, 200, 220]  # steps 20, 20, 20, 80, 20, 20, 20
    result = inspect_video(gray_video(tmp_path / "jump.mp4", levels))
    mean = 200 / 7
    assert result["frames"] == 8
    assert int(np.argmax(result["changes"])) == 3
    assert result["mean"] == pytest.approx(mean, rel=0.03)
    assert result["max_over_mean"] == pytest.approx(80 / mean, rel=0.05)
    d = np.array([20, 20, 20, 80, 20, 20, 20.0])
    assert result["cv"] == pytest.approx(d.std() / mean, rel=0.05)
    assert result["smoothness_aid"] == pytest.approx(1 - gini(d), rel=0.05)


def test_inspect_agrees_with_the_whole_decoded_video(tmp_path):
    """Streaming gives the figures that decoding everything at once gives, on textured frames."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    path = tmp_path / "texture.mp4"
    with VideoWriter(path, W, H, 24, crf=0) as writer:
        for shift in (0, 2, 4, 12, 14):
            writer.write(np.roll(base, shift, axis=1))
    frames, _ = read_video(path)
    motion = Motion()
    for frame in frames:
        motion.add(frame)
    result = inspect_video(path)
    assert result == {**motion.summary(), "video": str(path), "changes": [round(c, 3) for c in motion.changes], "keyframes": []}


def one_line_bad_input(path: Path, match: str) -> str:
    with pytest.raises(BadInput) as caught:
        inspect_video(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and match in message, message
    assert len(message) < 200 and caught.value.exit_code == EXIT_USAGE
    return message


def test_bad_files_are_one_line_errors(tmp_path):
    one_line_bad_input(tmp_path / "missing.mp4", "does not exist")
    one_line_bad_input(tmp_path, "is a directory")
    (tmp_path / "empty.mp4").write_bytes(b"")
    one_line_bad_input(tmp_path / "empty.mp4", "is empty")
    (tmp_path / "notes.txt").write_text("not a video\n" * 20)
    one_line_bad_input(tmp_path / "notes.txt", "not a video ffmpeg can read (Invalid data found when processing input)")
    (tmp_path / "fake.mp4").write_bytes(b"\0\0\0\x20ftypisom" + bytes(200))
    one_line_bad_input(tmp_path / "fake.mp4", "not a video ffmpeg can read")
    Image.fromarray(gray(9)).save(tmp_path / "still.png")
    one_line_bad_input(tmp_path / "still.png", "only 1 frame")
    one_line_bad_input(gray_video(tmp_path / "single.mp4", [9]), "only 1 frame")


def test_a_video_without_frames(tmp_path):
    # ffmpeg given no frames writes a file with no stream at all.
    one_line_bad_input(gray_video(tmp_path / "none.mp4", []), "no video stream")


# ---- keyframes from the manifest -----------------------------------------------------------------
def write_manifest(video: Path, content) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    video.with_name(video.name + ".json").write_text(text)


def test_keyframes_come_from_the_manifest_beside_the_video(tmp_path):
    video = gray_video(tmp_path / "walk.mp4", range(0, 200, 20))  # 10 frames
    write_manifest(video, {"format": "latentwalk-manifest/1", "keyframe_frames": [0, 4, 9], "job": {}})
    assert inspect_video(video)["keyframes"] == [0, 4, 9]
    write_manifest(video, {"format": "latentwalk-manifest/1", "keyframe_frames": [0, 9, 10, 24]})
    assert inspect_video(video)["keyframes"] == [0, 9]  # none past the video's end


@pytest.mark.parametrize(
    "manifest",
    [
        "{not json",
        "[1, 2]",
        {"keyframe_frames": [0, 4]},  # no format: not ours
        {"format": "other/1", "keyframe_frames": [0, 4]},
        {"format": "latentwalk-manifest/1"},
        {"format": "latentwalk-manifest/1", "keyframe_frames": "0,4"},
        {"format": "latentwalk-manifest/1", "keyframe_frames": [0, "4"]},
        {"format": "latentwalk-manifest/1", "keyframe_frames": [0, True]},
    ],
)
def test_a_broken_manifest_means_no_keyframes(tmp_path, manifest):
    video = gray_video(tmp_path / "walk.mp4", [0, 20, 40])
    write_manifest(video, manifest)
    assert inspect_video(video)["keyframes"] == []


def test_manifest_format_matches_the_manifest_module():
    from latentwalk import inspect, manifest

    assert inspect.MANIFEST_FORMAT == manifest.FORMAT


# ---- table and plot -------------------------------------------------------------------------------
@pytest.fixture
def results(tmp_path):
    even = gray_video(tmp_path / "even.mp4", range(15, 241, 25))
    jump = gray_video(tmp_path / "jump.mp4", [20, 40, 60, 80, 160, 180, 200, 220])
    write_manifest(jump, {"format": "latentwalk-manifest/1", "keyframe_frames": [0, 4, 7]})
    return [inspect_video(even), inspect_video(jump)]


def test_table_has_a_header_and_one_row_per_video(results):
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["video", "frames", "mean", "cv", "max/mean", "istd", "pdv", "1-gini"]
    assert len(lines) == 3
    for line, result in zip(lines[1:], results):
        cells = line.split()
        assert cells[0] == result["video"] and cells[1] == str(result["frames"])
        keys = ["mean", "cv", "max_over_mean", "istd", "pdv", "smoothness_aid"]
        assert [float(c) for c in cells[2:]] == [result[k] for k in keys]
    assert len({len(line) for line in lines}) == 1  # columns line up: the last is right-aligned


def test_plot_writes_a_png_with_each_videos_colour(results, tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")  # a plot is replaced
    plot(results, path)
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (960, 480)
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert PALETTE[0] in colours and PALETTE[1] in colours
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == ["plot.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_plot_marks_keyframes(results, tmp_path):
    """The jump video's keyframes at frames 4 and 7 (of 0..7 on the x axis) are columns of its colour."""
    plot(results[1:], tmp_path / "jump.png")
    image = np.asarray(Image.open(tmp_path / "jump.png").convert("RGB"))
    column_share = (image == PALETTE[0]).all(axis=2).mean(axis=0)  # one video: the first colour
    marked = np.flatnonzero(column_share > 0.2)  # dashed over most of the height
    left, right, last = 70, 960 - 20, 7
    expected = [round(left + (right - left) * k / last) for k in (4, 7)]
    for x in expected:
        assert any(abs(m - x) <= 1 for m in marked), (x, marked)


def test_plot_path_checks(tmp_path):
    for path, match in [
        (tmp_path / "plot.jpg", "must end in .png"),
        (tmp_path / "plot", "must end in .png"),
        (tmp_path / "missing" / "plot.png", "does not exist"),
    ]:
        with pytest.raises(BadInput, match=match):
            check_plot_path(path)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(BadInput, match="is a directory"):
        plot([], tmp_path / "dir.png")
    check_plot_path(tmp_path / "PLOT.PNG")


# ---- the CLI, once `inspect` is wired into it ----------------------------------------------------
def cli_has_inspect() -> bool:
    from latentwalk.cli import app

    # A command registered as @app.command() has no name: typer takes the function's.
    return "inspect" in [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]


needs_cli = pytest.mark.skipif(not cli_has_inspect(), reason="`inspect` is not a latentwalk command yet")


def invoke(*args):
    from typer.testing import CliRunner

    from latentwalk.cli import app

    return CliRunner().invoke(app, ["inspect", *map(str, args)])


@needs_cli
def test_cli_json_is_one_object_per_video(results, tmp_path):
    result = invoke(tmp_path / "even.mp4", tmp_path / "jump.mp4", "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == results


@needs_cli
def test_cli_table_and_plot(results, tmp_path):
    result = invoke(tmp_path / "even.mp4", tmp_path / "jump.mp4", "--plot", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == format_table(results)
    assert Image.open(tmp_path / "p.png").size == (960, 480)


@needs_cli
def test_cli_errors_are_one_line(tmp_path):
    result = invoke(tmp_path / "missing.mp4")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {str(tmp_path / 'missing.mp4')!r} does not exist\n"
    gray_video(tmp_path / "even.mp4", [0, 20, 40])
    result = invoke(tmp_path / "even.mp4", "--plot", tmp_path / "p.jpg")
    assert result.exit_code == 2 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "must end in .png" in result.stderr
