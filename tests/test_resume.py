"""Cron-grade runs: killed at any point, they resume to frames bit-identical to an uninterrupted
render; signals, locks, a full disk and a dead ffmpeg end in one line and keep finished frames."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import read_png, read_video

# Slow enough to kill in the middle (about 0.4 s a frame), small enough to stay quick.
WALK = ["seed-walk", "a castle", "--seeds", "1,2,3", "--frames", "5", "--preset", "tiny", "--steps", "30", "--batch-size", "2"]
FRAMES = 11
# For a run that must still be going while other commands start (5 s of imports each).
LONG_WALK = [*WALK, "--frames", "60"]


def start(args, cwd: Path, cache: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LATENTWALK_CACHE": str(cache)}
    env.pop("LATENTWALK_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "latentwalk", *map(str, args)], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, **popen,
    )  # fmt: skip


def work_frames(cache: Path) -> list[Path]:
    """The renders an interrupted run keeps (by their place in the walk, not frame number)."""
    return sorted(cache.glob("work/*/renders/**/*.png"))


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first (exit {proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def here(*args, cwd: Path, cache: Path | None = None, check_ok: bool = True) -> subprocess.CompletedProcess:
    """The CLI in this process, in `cwd` (and with its own cache): for the runs around the
    killed ones, where the operating system is not what is tested. Spares an interpreter's and
    torch's start-up (5 s of two cores) per run."""
    from typer.testing import CliRunner

    from latentwalk.cli import app

    saved = (os.getcwd(), {k: os.environ.get(k) for k in ("LATENTWALK_CACHE", "HF_HUB_OFFLINE", "LATENTWALK_DEBUG")})
    os.chdir(cwd)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("LATENTWALK_DEBUG", None)
    if cache is not None:
        os.environ["LATENTWALK_CACHE"] = str(cache)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(saved[0])
        for key, value in saved[1].items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    done = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
    if check_ok and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}")
    return done


def finish(args, cwd: Path, cache: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run to the end with --keep-frames, so the frames can be compared afterwards."""
    result = here(*args, "--keep-frames", "--json", cwd=cwd, cache=cache)
    return result, json.loads(result.stdout)


def pixels(folder: Path) -> list[np.ndarray]:
    return [read_png(p) for p in sorted(folder.glob("frame_*.png"))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[list[np.ndarray], np.ndarray]:
    """The uninterrupted render: its frames and its decoded video."""
    folder = tmp_path_factory.mktemp("reference")
    here(*WALK, "-o", "ref.mp4", "--frames-dir", "frames", "-q", cwd=folder)
    frames = pixels(folder / "frames")
    assert len(frames) == FRAMES
    return frames, read_video(folder / "ref.mp4")[0]


def assert_identical(summary: dict, output: Path, reference) -> None:
    frames, video = reference
    resumed = pixels(Path(summary["frames_dir"]))
    assert len(resumed) == FRAMES
    for i, (a, b) in enumerate(zip(resumed, frames)):
        assert np.array_equal(a, b), f"frame {i} differs"
    assert np.array_equal(read_video(output)[0], video)


def test_sigkill_at_several_points_then_resume_gives_identical_frames(tmp_path, reference):
    cache = tmp_path / "cache"
    args = [*WALK, "-o", "walk.mp4"]
    # Killed before the first frame, then after 3 frames (mid-batch: batches are pairs), then after 8.
    for at_least in (0, 3, 8):
        proc = start(args, tmp_path, cache)
        if at_least == 0:
            wait_for(lambda: any(cache.glob("work/*/job.json")), proc)
        else:
            wait_for(lambda: len(work_frames(cache)) >= at_least, proc)
        proc.kill()
        proc.wait()
        proc.stdout.close(), proc.stderr.close()
        assert not (tmp_path / "walk.mp4").exists()
    kept = work_frames(cache)
    assert 8 <= len(kept)
    # A crash can also cut a render short (power loss): it must be rendered again, not used.
    kept[1].write_bytes(kept[1].read_bytes()[:100])
    result, summary = finish(args, tmp_path, cache)
    assert f"resuming: {len(kept)} renders already made" in result.stderr
    # All are used as they are but the cut one and its batch-mate, and one of a batch the kill
    # cut short (a batch is rendered whole, so those are made again).
    assert len(kept) - 3 <= summary["resumed"] < len(kept)
    assert_identical(summary, tmp_path / "walk.mp4", reference)
    # No litter beside the output: no lock, no partial video.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "walk.mp4", "walk.mp4.json"]


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_cleanly_with_a_resume_line(tmp_path, reference, signum, code):
    cache = tmp_path / "cache"
    args = [*WALK, "-o", "walk.mp4"]
    proc = start(args, tmp_path, cache)
    wait_for(lambda: len(work_frames(cache)) >= 3, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    last = stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"Error: interrupted by {name}: ") and last.endswith("; run the same command again to resume"), last
    assert "Traceback" not in stderr
    kept = len(work_frames(cache))
    assert f"{kept} renders kept in" in last and kept >= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no video, no partial, no lock
    result, summary = finish(args, tmp_path, cache)
    assert summary["resumed"] == kept
    assert_identical(summary, tmp_path / "walk.mp4", reference)


def test_a_changed_parameter_never_reuses_old_frames(tmp_path, reference):
    cache = tmp_path / "cache"
    proc = start([*WALK, "-o", "walk.mp4"], tmp_path, cache)
    wait_for(lambda: len(work_frames(cache)) >= 2, proc)
    proc.kill(), proc.communicate()
    # Another guidance: another key, so none of the frames above are used.
    result, summary = finish([*WALK, "-o", "walk.mp4", "--guidance", "5"], tmp_path, cache)
    assert summary["resumed"] == 0 and "resuming" not in result.stderr
    assert not np.array_equal(pixels(Path(summary["frames_dir"]))[1], reference[0][1])
    # The interrupted job's frames are still there for its own re-run.
    assert len(list(cache.glob("work/*"))) == 2


def test_success_removes_the_work_directory_unless_keep_frames(tmp_path):
    cache = tmp_path / "cache"
    fast = ["seed-walk", "a castle", "--seeds", "1,2", "--frames", "2", "--preset", "tiny", "--steps", "2"]
    here(*fast, "-o", "a.mp4", cwd=tmp_path, cache=cache)
    assert list(cache.glob("work/*")) == []
    summary = json.loads(here(*fast, "-o", "b.mp4", "--keep-frames", "--json", cwd=tmp_path, cache=cache).stdout)
    kept = Path(summary["frames_dir"])
    assert kept.parent == cache / "work" and len(list(kept.glob("frame_*.png"))) == 3
    # Kept frames are reused: another format of the same walk costs no rendering.
    result = here(*fast, "-o", "c.webm", "--json", cwd=tmp_path, cache=cache)
    assert json.loads(result.stdout)["resumed"] == 3
    assert read_video(tmp_path / "c.webm")[0].shape == (3, 64, 64, 3)


def test_a_second_run_on_the_same_output_is_refused_while_the_first_lives(tmp_path):
    cache = tmp_path / "cache"
    first = start([*LONG_WALK, "-o", "walk.mp4"], tmp_path, cache)
    wait_for(lambda: (tmp_path / ".walk.mp4.lock").exists() and len(work_frames(cache)) >= 1, first)
    first.send_signal(signal.SIGSTOP)  # still holding its locks, no longer taking the cores
    # Other parameters, same output: the output lock refuses it.
    result = here(*LONG_WALK, "--steps", "3", "-o", "walk.mp4", cwd=tmp_path, check_ok=False, cache=cache)
    assert result.returncode == 75
    assert result.stderr.startswith(f"Error: output 'walk.mp4' is in use by another latentwalk (pid {first.pid} on ")
    assert result.stderr.count("\n") == 1
    # Same parameters, other output: the same frames, so the work directory's lock refuses it.
    result = here(*LONG_WALK, "-o", "other.mp4", cwd=tmp_path, check_ok=False, cache=cache)
    assert result.returncode == 75 and "frames folder" in result.stderr
    # Dead holders leave their lock files, but not their locks.
    first.kill(), first.communicate()
    assert (tmp_path / ".walk.mp4.lock").exists()
    # (A cheap job: what matters is that the dead holder's lock does not stop it.)
    here(*WALK, "--steps", "2", "-o", "walk.mp4", "-q", cwd=tmp_path, cache=cache)
    assert (tmp_path / "walk.mp4").exists() and not (tmp_path / ".walk.mp4.lock").exists()


def test_clean_lists_and_removes_stale_work_directories_but_not_running_ones(tmp_path):
    cache = tmp_path / "cache"
    stale = start([*LONG_WALK, "-o", "stale.mp4"], tmp_path, cache)
    wait_for(lambda: len(work_frames(cache)) >= 1, stale)
    stale.kill(), stale.communicate()
    assert (tmp_path / ".stale.mp4.lock").exists()  # a killed run cannot tidy up
    running = start([*LONG_WALK, "--seeds", "4,5,6", "-o", "running.mp4"], tmp_path, cache)
    try:
        # job.json, not the folder: a folder is made a moment before the record naming its outputs.
        wait_for(lambda: len(list(cache.glob("work/*/job.json"))) == 2, running)
        running.send_signal(signal.SIGSTOP)  # its locks held, its cores free
        listing = here("clean", "--dry-run", cwd=tmp_path, cache=cache).stdout
        assert listing.count("would remove: ") == 1 and str(tmp_path / "stale.mp4") in listing
        assert listing.count("kept (running): ") == 1
        summary = json.loads(here("clean", "--json", cwd=tmp_path, cache=cache).stdout)
        actions = {Path(w["outputs"][0]).name: w["action"] for w in summary["work_dirs"]}
        assert actions == {"stale.mp4": "removed", "running.mp4": "kept"} and summary["freed_bytes"] > 0
        assert len(list(cache.glob("work/*"))) == 1
        # What the killed run left beside its output goes too; the running one's lock stays.
        assert not list(tmp_path.glob(".stale.mp4*")) and (tmp_path / ".running.mp4.lock").exists()
    finally:
        running.kill(), running.communicate()
    assert "No work directories" in here("clean", cwd=tmp_path, cache=tmp_path / "none").stdout


def ffmpeg_children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except OSError:
            continue
        if int(fields[1]) == pid and "ffmpeg" in comm:
            found.append(int(stat.parent.name))
    return found


def test_ffmpeg_killed_mid_stream_is_one_line_and_keeps_the_frames(tmp_path, reference):
    cache = tmp_path / "cache"
    args = [*WALK, "-o", "walk.mp4", "-q"]
    proc = start(args, tmp_path, cache)
    wait_for(lambda: len(work_frames(cache)) >= 2 and ffmpeg_children(proc.pid), proc)
    for child in ffmpeg_children(proc.pid):
        os.kill(child, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    assert stderr.startswith("Error: ffmpeg stopped while writing 'walk.mp4': ffmpeg was killed by SIGKILL (")
    assert stderr.count("\n") == 1 and "renders kept in" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    result, summary = finish(args, tmp_path, cache)
    assert summary["resumed"] >= 2
    assert_identical(summary, tmp_path / "walk.mp4", reference)


def limit_file_size(size: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


@pytest.mark.parametrize("limit, message", [
    (60_000, "ffmpeg failed writing 'walk.mp4': the file grew past the size limit"),
    (3_000, "cannot write frame "),
])  # fmt: skip
def test_a_full_disk_is_one_line_and_keeps_finished_frames(tmp_path, limit, message):
    """RLIMIT_FSIZE stands in for a full disk: the video (60 kB of its 90), or each frame (3 kB of 42), cannot grow."""
    cache = tmp_path / "cache"
    args = ["seed-walk", "a castle", "--seeds", "1,2", "--frames", "40", "--preset", "tiny", "--steps", "1", "--size", "128", "-o", "walk.mp4"]
    proc = start(args, tmp_path, cache, preexec_fn=limit_file_size(limit))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("Error: " + message) and "Traceback" not in stderr, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    kept = len(work_frames(cache))
    if kept:
        assert f"({kept} renders kept in " in line
    result, summary = finish(args, tmp_path, cache)
    assert summary["resumed"] == kept and read_video(tmp_path / "walk.mp4")[0].shape == (41, 128, 128, 3)


def test_generate_resumes_past_the_images_it_already_wrote(tmp_path):
    cache = tmp_path / "cache"
    args = ["generate", "a castle", "--seeds", "1-6", "--preset", "tiny", "--steps", "40", "-o", "out"]
    here(*args, "-o", "ref", "-q", cwd=tmp_path)
    proc = start(args, tmp_path, cache)
    wait_for(lambda: len(list((tmp_path / "out").glob("*.png"))) >= 2, proc)
    proc.kill(), proc.communicate()
    written = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.png")}
    assert 2 <= len(written) < 6
    summary = json.loads(here(*args, "--json", cwd=tmp_path, cache=cache).stdout)
    assert summary["resumed"] >= len(written) and list(cache.glob("work/*")) == []
    for name, data in written.items():  # untouched, not rewritten
        assert (tmp_path / "out" / name).read_bytes() == data
    for seed in range(1, 7):
        name = f"a-castle-{seed}.png"
        assert np.array_equal(read_png(tmp_path / "out" / name), read_png(tmp_path / "ref" / name))
        assert (tmp_path / "out" / f"{name}.json").exists()


def test_an_audio_walk_killed_mid_render_resumes_to_identical_frames_and_sound(tmp_path):
    """The music decides where renders go; a resumed run hears the same and decides the same."""
    from latentwalk.audio import click_track, write_wav

    write_wav(tmp_path / "clicks.wav", click_track([0.3, 0.7, 1.45, 1.8], 2.5))
    args = [*WALK[:3], "1,2", *WALK[6:], "--audio", "clicks.wav", "--audio-start", "0.5", "--audio-duration", "1.5", "--fps", "8"]
    here(*args, "-o", "ref.mp4", "--frames-dir", "ref", "-q", cwd=tmp_path)
    reference = pixels(tmp_path / "ref")
    assert len(reference) == 12
    cache = tmp_path / "cache"
    proc = start([*args, "-o", "walk.mp4"], tmp_path, cache)
    wait_for(lambda: len(work_frames(cache)) >= 5, proc)
    proc.kill(), proc.communicate()
    assert not (tmp_path / "walk.mp4").exists()
    result, summary = finish([*args, "-o", "walk.mp4"], tmp_path, cache)
    assert summary["resumed"] >= 4
    resumed = pixels(Path(summary["frames_dir"]))
    assert len(resumed) == 12 and all(np.array_equal(a, b) for a, b in zip(resumed, reference))
    assert np.array_equal(read_video(tmp_path / "walk.mp4")[0], read_video(tmp_path / "ref.mp4")[0])
    ref_json, json_ = (json.loads((tmp_path / f"{n}.mp4.json").read_text())["job"] for n in ("ref", "walk"))
    assert ref_json["plan"] == json_["plan"] and ref_json["audio"] == json_["audio"]


def test_a_shared_walk_sigkilled_mid_render_resumes_bit_identical(tmp_path):
    """--share: a render starts from its neighbours' latents, kept beside their pictures, so a
    walk killed with renders in the pool (at their own steps) resumes to the same frames."""
    walk = [*WALK, "--steps", "16", "--share"]  # (quicker: the kill comes after 6 of about 14 renders)
    reference = tmp_path / "reference"
    reference.mkdir()
    here(*walk, "-o", "ref.mp4", "--frames-dir", "frames", "-q", cwd=reference)
    frames = pixels(reference / "frames")
    cache = tmp_path / "cache"
    proc = start([*walk, "-o", "walk.mp4"], tmp_path, cache)
    wait_for(lambda: len(work_frames(cache)) >= 6, proc)  # the keyframes and some shared renders
    proc.kill()
    proc.wait()
    proc.stdout.close(), proc.stderr.close()
    assert any(cache.glob("work/*/renders/**/*.latents"))
    result, summary = finish([*walk, "-o", "walk.mp4"], tmp_path, cache)
    assert summary["resumed"] >= 6 and summary["model_calls"] < summary["model_calls_unshared"]
    resumed = pixels(Path(summary["frames_dir"]))
    assert len(resumed) == len(frames) == FRAMES
    for i, (a, b) in enumerate(zip(resumed, frames)):
        assert np.array_equal(a, b), f"frame {i} differs"
    # The resumed run's manifest records the starts of the renders it found, too.
    here("render", "walk.mp4.json", "-o", "again.mp4", "--frames-dir", "again", "-q", cwd=tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(tmp_path / "again"), frames, strict=True))


def test_an_image_walk_sigkilled_while_inverting_and_while_rendering_resumes_bit_identical(tmp_path):
    """A picture's keyframe starts from its inversion, kept in the cache: killed before it is
    kept, just after, or with renders half done, the walk resumes to the same frames."""
    from PIL import Image

    Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    (tmp_path / "walk.txt").write_text("a castle | image=photo.png\na forest | seed=2\n")
    walk = ["prompt-walk", "walk.txt", *WALK[4:], "--no-smooth"]
    here(*walk, "-o", "ref.mp4", "--frames-dir", "ref", "-q", cwd=tmp_path, cache=tmp_path / "ref-cache")
    reference = pixels(tmp_path / "ref")
    cache = tmp_path / "cache"
    inverted = lambda: any(cache.glob("inversions/*.safetensors"))  # noqa: E731
    # Renders are stored row by row after their batch: at 4 the keyframes (a batch each) and a
    # whole batch of 2 in-betweens are in, so at least 3 are found whole (at 3 a batch can be half in).
    for kept in (inverted, lambda: len(work_frames(cache)) >= 4):
        proc = start([*walk, "-o", "walk.mp4"], tmp_path, cache)
        wait_for(kept, proc)
        proc.kill(), proc.communicate()
    assert not (tmp_path / "walk.mp4").exists()
    result, summary = finish([*walk, "-o", "walk.mp4"], tmp_path, cache)
    assert summary["resumed"] >= 3 and summary["inversions"] == 0
    resumed = pixels(Path(summary["frames_dir"]))
    assert len(resumed) == len(reference) == 6
    for i, (a, b) in enumerate(zip(resumed, reference)):
        assert np.array_equal(a, b), f"frame {i} differs"
