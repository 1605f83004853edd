"""Walks with music: decoding every format, the sound muxed in sync, resume, manifests, bad input."""

import builtins
import json
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from conftest import FAST, read_png, read_video
from latentwalk.audio import analyze, click_track, decode, write_wav

CLICKS = [0.4, 0.95, 1.3, 2.05, 2.6]  # irregular
SECONDS = 3.0
FPS = 12
WALK = ["seed-walk", "a castle", "--seeds", "1,2", *FAST, "--fps", str(FPS)]


@pytest.fixture
def clicks(tmp_path) -> Path:
    path = tmp_path / "clicks.wav"
    write_wav(path, click_track(CLICKS, SECONDS))
    return path


def encode(source: Path, target: Path, *codec: str) -> Path:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), *codec, str(target)]
    subprocess.run(command, check=True, capture_output=True)
    return target


def audio_of(video: Path, rate: int = 44100) -> np.ndarray:
    """The video's sound, decoded back as mono samples."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(video), "-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"]
    return np.frombuffer(subprocess.run(command, check=True, capture_output=True).stdout, np.float32)


def click_times(samples: np.ndarray, rate: int = 44100) -> list[float]:
    """Where each click starts: the first sample above a threshold after a quiet stretch."""
    loud = np.nonzero(np.abs(samples) > 0.2)[0]
    starts = [i for k, i in enumerate(loud) if k == 0 or i - loud[k - 1] > 0.1 * rate]
    return [i / rate for i in starts]


def summary_of(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("suffix, codec", [
    (".flac", []), (".mp3", ["-c:a", "libmp3lame"]), (".ogg", ["-c:a", "libvorbis"]), (".m4a", ["-c:a", "aac"]),
])  # fmt: skip
def test_every_format_decodes_through_the_bundled_ffmpeg_with_onsets_on_the_clicks(tmp_path, clicks, suffix, codec):
    path = encode(clicks, tmp_path / f"clicks{suffix}", *codec)
    found = analyze(path, 0.2, 2.5)
    assert found.duration == pytest.approx(2.5, abs=0.01)
    expected = [c - 0.2 for c in CLICKS if 0.2 < c < 2.7]
    # Every click is an onset within a frame at 24 fps (compressed formats' priming delay is undone).
    assert len(found.onsets) == len(expected)
    assert max(abs(a - b) for a, b in zip(found.onsets, expected)) < 1 / 24
    assert found.sha256 and found.envelope.max() > 0


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_the_sound_is_muxed_in_sync_and_as_long_as_the_video(run, tmp_path, clicks, suffix):
    summary = summary_of(run(*WALK, "--audio", clicks, "--audio-start", "0.25", "-o", f"w{suffix}", "--json", "-q"))
    frames, meta = read_video(tmp_path / f"w{suffix}")
    # The section is 2.75 s: 33 frames at 12 fps, the last keyframe on the last.
    assert len(frames) == summary["frames"] == 33 and summary["keyframe_frames"] == [0, 32]
    sound = audio_of(tmp_path / f"w{suffix}")
    assert abs(sound.size / 44100 - 33 / FPS) < 1 / FPS
    # Not shifted: each click is where it was in the source, less the section's start.
    expected = [c - 0.25 for c in CLICKS]
    found = click_times(sound)
    assert len(found) == len(expected) and max(abs(a - b) for a, b in zip(found, expected)) < 0.005
    assert summary["audio"]["name"] == "clicks.wav" and summary["audio"]["start"] == 0.25
    assert -1 <= summary["audio"]["correlation"] <= 1
    manifest = json.loads((tmp_path / f"w{suffix}.json").read_text())
    audio = manifest["job"]["audio"]
    assert audio["sha256"] == summary["audio"]["sha256"] and audio["start"] == 0.25 and len(audio["envelope"]) == 32
    # inspect --audio lines the video up with the music where the manifest says (0.25 s in),
    # and finds the envelope the render followed (re-measured from the file).
    found = json.loads(run("inspect", f"w{suffix}", "--audio", clicks, "--json", "--plot", "sync.png").stdout)
    assert found["audio"]["start"] == 0.25 and found["audio"]["fps"] == FPS
    assert found["audio"]["envelope"] == audio["envelope"]
    # The render measures its own frames, inspect the decoded ones: close at .mp4's quality
    # (VP9 at its default quality moves builtin:tiny's noise too much to compare).
    if suffix == ".mp4":
        assert abs(found["audio"]["correlation"] - summary["audio"]["correlation"]) < 0.1
    assert (tmp_path / "sync.png").stat().st_size > 0
    table = run("inspect", f"w{suffix}", "--audio", clicks, "--audio-start", "0").stdout
    assert table.splitlines()[0].endswith("audio r") and len(table.splitlines()) == 2


def test_a_manifest_renders_again_with_its_sound_and_finds_it_by_sha256(run, tmp_path, clicks):
    run(*WALK, "--audio", clicks, "--audio-duration", "1.5", "-o", "w.mp4", "--frames-dir", "a", "-q")
    run("render", "w.mp4.json", "-o", "again.mp4", "--frames-dir", "b", "-q")
    first, second = sorted((tmp_path / "a").glob("frame_*.png")), sorted((tmp_path / "b").glob("frame_*.png"))
    assert len(first) == len(second) == 18
    assert all(np.array_equal(read_png(x), read_png(y)) for x, y in zip(first, second))
    assert np.array_equal(audio_of(tmp_path / "w.mp4"), audio_of(tmp_path / "again.mp4"))
    # Moved away: one line naming the file; --audio points at it, and it must be the same bytes.
    moved = tmp_path / "elsewhere.wav"
    clicks.rename(moved)
    result = run("render", "w.mp4.json", "-o", "third.mp4", "-q", code=2)
    assert result.output.startswith("Error: the manifest needs its audio 'clicks.wav' (sha256 ") and result.output.count("\n") == 1
    write_wav(tmp_path / "other.wav", click_track([0.5], 2.0))
    result = run("render", "w.mp4.json", "-o", "third.mp4", "--audio", "other.wav", "-q", code=2)
    assert result.output == "Error: audio 'other.wav' is not the file the manifest was rendered with (its sha256 differs)\n"
    run("render", "w.mp4.json", "-o", "third.mp4", "--audio", moved, "-q")
    assert not (tmp_path / "fourth.mp4").exists()


def test_keyframes_on_beats_and_at_times(run, tmp_path):
    beats = [0.1 + 0.5 * i for i in range(9)]  # 120 bpm
    write_wav(tmp_path / "beats.wav", click_track(beats, 4.2))
    summary = summary_of(run(*WALK[:3], "1,2,3", *WALK[4:], "--audio", "beats.wav", "--on-beats", "2", "-o", "b.mp4", "--json", "-q"))
    # Keyframe 1 on beat 2, keyframe 2 on beat 4, where the video ends (not at the section's end).
    analysis = analyze(tmp_path / "beats.wav")
    assert analysis.beats[:5] == pytest.approx(beats[:5], abs=0.03)
    assert summary["keyframe_frames"] == [0, round(analysis.beats[2] * FPS), round(analysis.beats[4] * FPS)]
    assert abs(audio_of(tmp_path / "b.mp4").size / 44100 - summary["frames"] / FPS) < 1 / FPS
    (tmp_path / "story.txt").write_text("a castle | seed=1\na tower | at=1.5\na bridge\n")
    summary = summary_of(run("prompt-walk", "story.txt", *FAST, "--fps", str(FPS), "--audio", "beats.wav", "-o", "s.mp4", "--json", "-q"))
    # at=1.5: frame 18; the last keyframe on the section's last frame (4.2 s: 50 frames).
    assert summary["keyframe_frames"] == [0, 18, 49] and summary["frames"] == 50


def test_keyframe_times_and_lengths_that_disagree_are_one_line(run, tmp_path, clicks):
    (tmp_path / "timed.txt").write_text("a castle\na tower | at=1\na bridge | at=2\n")
    bad(run, "prompt-walk", "timed.txt", *FAST, "--frames", "5", message="the prompts file gives keyframe times (at=) and --frames gives lengths; give one or the other")
    bad(run, "prompt-walk", "timed.txt", *FAST, "--duration", "5", message="line 3: at=2 ends the video, but --duration says 5 s; drop one")
    (tmp_path / "same.txt").write_text("a castle\na tower | at=0.01\n")
    bad(run, "prompt-walk", "same.txt", *FAST, message="line 2: the keyframe at 0.01 s is not at least a frame after the one before it (at 0 s); keyframe times must increase")
    # Every segment's own frames= sets the video's length, whatever the section's.
    (tmp_path / "sized.txt").write_text("a castle | frames=6\na tower\n")
    summary = summary_of(run("prompt-walk", "sized.txt", *FAST, "--fps", str(FPS), "--audio", clicks, "-o", "s.mp4", "--json", "-q"))
    assert summary["frames"] == 7 and abs(audio_of(tmp_path / "s.mp4").size / 44100 - 7 / FPS) < 1 / FPS
    (tmp_path / "sized.txt").write_text("a castle | frames=60\na tower\na bridge\n")
    bad(run, "prompt-walk", "sized.txt", *FAST, "--fps", str(FPS), "--audio", clicks, message="the audio section gives 36 frames, too few for 2 segments; make it longer or raise --fps")


def test_silence_moves_evenly_with_a_warning(run, tmp_path):
    write_wav(tmp_path / "silence.wav", np.zeros(44100 * 2, np.float32))
    result = run(*WALK, "--audio", "silence.wav", "-o", "s.mp4", "--json")
    assert "Warning: silence.wav has no onsets from 0 s (silence?): the motion is even" in result.stderr
    manifest = json.loads((tmp_path / "s.mp4.json").read_text())
    assert set(manifest["job"]["audio"]["envelope"]) == {0.0} and summary_of(result)["frames"] == 24


def test_no_smooth_moves_t_by_the_music(run, tmp_path, clicks):
    run(*WALK, "--audio", clicks, "--no-smooth", "-o", "u.mp4", "-q")
    plan = json.loads((tmp_path / "u.mp4.json").read_text())["job"]["plan"]
    steps = np.diff([entry[3] for entry in plan[:-1]])
    assert steps.max() > 5 * np.median(steps)  # t leaps at the clicks


def bad(run, *args, message):
    result = run(*args, code=2)
    assert result.output == f"Error: {message}\n", result.output


def test_bad_audio_input_is_one_line_and_writes_nothing(run, tmp_path, clicks, monkeypatch):
    (tmp_path / "notes.txt").write_text("not audio at all\n")
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    cases = [
        (["--audio", "missing.mp3"], "audio file 'missing.mp3' does not exist"),
        (["--audio", "notes.txt"], "'notes.txt' is not audio ffmpeg can read (Invalid data found when processing input)"),
        (["--audio", clicks, "--audio-start", "5"], f"--audio-start 5 is past the end of {str(clicks)!r} (3.00 s long)"),
        (["--audio", clicks, "--audio-start", "2", "--audio-duration", "2"], f"the section from 2 s for 2 s ends past the end of {str(clicks)!r} (3.00 s long)"),
        (["--audio", clicks, "--audio-duration", "0"], "--audio-duration must be greater than 0 and at most 86400, got 0.0"),
        (["--audio", clicks, "--audio-start", "-1"], "--audio-start must be 0 or more seconds, got -1.0"),
        (["--audio", clicks, "--audio-react", "1.5"], "--audio-react must be from 0 to 1, got 1.5"),
        (["--audio", clicks, "--on-beats", "0"], "--on-beats must be greater than 0 and at most 10000, got 0"),
        (["--audio", clicks, "--on-beats", "2", "--frames", "5"], "--on-beats sets where the keyframes fall; give it or --frames/--duration, not both"),
        (["--audio", clicks, "--on-beats", "50"], "--on-beats 50 puts the last keyframe on beat 50, but the audio section has"),
        (["--on-beats", "2"], "--on-beats needs --audio"),
        (["--audio-start", "2"], "--audio-start needs --audio"),
        (["--audio-react", "0.5"], "--audio-react needs --audio"),
        (["--audio", clicks, "-o", "w.gif"], "output 'w.gif': a .gif has no sound; write .mp4 or .webm to keep the --audio"),
        (["--audio", "empty.wav"], "'empty.wav' has no audio (0 samples)"),
        (["--audio", clicks, "--audio-duration", "0.05"], "the audio section is 0.05 s, 1 frame at 12 fps: too few for 2 keyframes; give a longer --audio-duration"),
        (["--audio", tmp_path], f"audio file {str(tmp_path)!r} is a directory"),
    ]
    for flags, message in cases:
        result = run(*WALK, *flags, code=2)
        assert result.output.startswith(f"Error: {message}") and result.output.count("\n") == 1, (flags, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clicks.wav", "empty.wav", "notes.txt"]


def test_inspect_audio_bad_input(run, tmp_path, clicks):
    run(*WALK, "-o", "w.mp4", "-q")
    bad(run, "inspect", "w.mp4", "--audio-start", "1", message="--audio-start needs --audio")
    bad(run, "inspect", "w.mp4", "--audio", "nope.wav", message="audio file 'nope.wav' does not exist")
    bad(run, "inspect", "w.mp4", "--audio", clicks, "--audio-start", "9", message=f"--audio-start 9 is past the end of {str(clicks)!r} (3.00 s long)")


def test_without_librosa_audio_says_what_to_install(run, clicks, monkeypatch):
    real_import = builtins.__import__

    def no_librosa(name, *args, **kwargs):
        if name == "librosa" or name.startswith("librosa."):
            raise ImportError("No module named 'librosa'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_librosa)
    bad(run, *WALK, "--audio", clicks, message="--audio needs librosa, which is not installed: pip install 'latentwalk[audio]'")


def test_decode_cuts_the_section_exactly(clicks):
    whole = decode(clicks)
    part = decode(clicks, 1.0, 0.5)
    assert whole.size == 3 * 22050 and part.size == 22050 // 2
    assert np.allclose(part, whole[22050 : 22050 + part.size], atol=1e-4)
