"""Listening: decode an audio section through the bundled ffmpeg and measure it with librosa.

Decoding goes through imageio-ffmpeg's ffmpeg (no system ffmpeg, and every format it reads:
wav, flac, mp3, ogg, m4a/aac, opus, ...), the same binary and the same `-ss`/`-t` cut that
video.py uses to mux the sound, so what is measured is what is heard. librosa (the extra
`latentwalk[audio]`) separates the percussive part (HPSS) and gives its onset strength, onsets
and beats, as stable-diffusion-videos' audio code does with its percussive spectrum.
music.py turns the measurements into timing.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from latentwalk.errors import BadInput

SAMPLE_RATE = 22050  # librosa's default; plenty for onsets and beats
HOP = 256  # envelope samples every 11.6 ms: several per video frame at 60 fps
INSTALL = "pip install 'latentwalk[audio]'"
MIN_SECONDS = 0.1  # shorter is not a section to time a video by (and too short for librosa's frames)


@dataclass
class Analysis:
    """What the section sounds like, in seconds from its start."""

    file: Path
    sha256: str
    start: float
    duration: float  # of the section as decoded
    rate: float  # envelope values per second
    envelope: np.ndarray  # percussive onset strength
    onsets: list[float]
    beats: list[float]
    tempo: float | None


def check_librosa() -> None:
    """Before any decoding: --audio without the extra is one line saying what to install."""
    try:
        import librosa  # noqa: F401
    except ImportError:
        raise BadInput(f"--audio needs librosa, which is not installed: {INSTALL}") from None


def check_audio_file(path: Path, what: str = "audio file") -> None:
    from latentwalk.video import check_readable_file

    check_readable_file(path, what)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def section_args(start: float, duration: float | None) -> list[str]:
    """ffmpeg input options that cut the section; before -i, and exact for audio (ffmpeg
    decodes from the seek point and drops samples up to `start`)."""
    args = ["-ss", f"{start:.6f}"] if start > 0 else []
    if duration is not None:
        args += ["-t", f"{duration:.6f}"]
    return args


def decode(path: Path, start: float = 0.0, duration: float | None = None, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The section as mono float32 samples at `rate`."""
    from imageio_ffmpeg import get_ffmpeg_exe

    command = [
        get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        *section_args(start, duration), "-i", os.path.abspath(path),
        "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        said = said[-1] if said else f"exit {result.returncode}"
        if "matches no streams" in said:
            raise BadInput(f"{str(path)!r} has no audio stream")
        raise BadInput(f"{str(path)!r} is not audio ffmpeg can read ({said.split(': ')[-1]})")
    return np.frombuffer(result.stdout, dtype=np.float32)


# Analyses made in this process, newest last: a studio checking a job as it is composed, or a
# batch of jobs on one song, listens once. Keyed by the file's stamp, so an edited file is heard anew.
_HEARD: OrderedDict[tuple, Analysis] = OrderedDict()
_HEARD_MOST = 4
_HEARING = threading.Lock()  # the studio listens from its worker and its request threads


def analyze(path: Path, start: float = 0.0, duration: float | None = None) -> Analysis:
    """Decode the section (checked: it must lie within the file and be longer than nothing)
    and measure it."""
    check_audio_file(path)
    check_librosa()
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, start, duration)
    with _HEARING:  # one analysis at a time: a second asker of the same section waits for the first's
        if key not in _HEARD:
            _HEARD[key] = _analyze(path, start, duration)
            while len(_HEARD) > _HEARD_MOST:
                _HEARD.popitem(last=False)
        return replace(_HEARD[key], file=path)


def _analyze(path: Path, start: float, duration: float | None) -> Analysis:
    samples = decode(path, start, duration)
    got = samples.size / SAMPLE_RATE
    if samples.size == 0 or (duration is not None and got < duration - 0.02):  # a few ms short: codec padding
        whole = decode(path).size / SAMPLE_RATE if start > 0 or duration is not None else got
        if whole == 0:
            raise BadInput(f"{str(path)!r} has no audio (0 samples)")
        if start >= whole:
            raise BadInput(f"--audio-start {start:g} is past the end of {str(path)!r} ({whole:.2f} s long)")
        if duration is not None and start + duration > whole:
            raise BadInput(f"the section from {start:g} s for {duration:g} s ends past the end of {str(path)!r} ({whole:.2f} s long)")
    if got < MIN_SECONDS:
        raise BadInput(f"the audio section of {str(path)!r} is {got:.3g} s long; it needs at least {MIN_SECONDS:g} s")
    try:
        envelope, onsets, beats, tempo = _listen(samples)
    except Exception as e:  # noqa: BLE001 - librosa's own checks, on a file we decoded fine
        raise BadInput(f"librosa could not analyse {str(path)!r} ({type(e).__name__}: {e})") from None
    return Analysis(
        file=path, sha256=file_sha256(path), start=start, duration=got,
        rate=SAMPLE_RATE / HOP, envelope=envelope, onsets=onsets, beats=beats, tempo=tempo,
    )  # fmt: skip


def _listen(samples: np.ndarray) -> tuple[np.ndarray, list[float], list[float], float | None]:
    """Onset envelope, onset times, beat times and tempo of mono samples at SAMPLE_RATE."""
    import librosa

    # Percussive part only (HPSS), as the peer does: a sustained chord should not move the picture.
    percussive = librosa.effects.percussive(samples)
    envelope = librosa.onset.onset_strength(y=percussive, sr=SAMPLE_RATE, hop_length=HOP)
    envelope = np.nan_to_num(np.asarray(envelope, dtype=np.float64))
    if not (np.abs(samples).max() > 1e-4 and envelope.max() > 0):
        return np.zeros_like(envelope), [], [], None  # silence: librosa's float noise is not a rhythm
    onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=SAMPLE_RATE, hop_length=HOP, units="time")
    found_tempo, beat_times = librosa.beat.beat_track(onset_envelope=envelope, sr=SAMPLE_RATE, hop_length=HOP, units="time")
    value = float(np.atleast_1d(found_tempo)[0])
    tempo = round(value, 2) if math.isfinite(value) and value > 0 else None
    return envelope, [float(o) for o in onsets], [float(b) for b in beat_times], tempo


def click_track(times: list[float], duration: float, rate: int = 44100) -> np.ndarray:
    """A test signal: short percussive clicks (a decaying 2 kHz burst) at `times`, silence
    between. The tests and scripts/bench_music.py measure sync against it."""
    samples = np.zeros(round(duration * rate), dtype=np.float32)
    n = round(0.02 * rate)
    burst = (np.sin(2 * np.pi * 2000 * np.arange(n) / rate) * np.exp(-np.arange(n) / (0.004 * rate))).astype(np.float32)
    for t in times:
        i = round(t * rate)
        part = samples[i : i + n]
        part += 0.8 * burst[: part.size]
    return samples


def write_wav(path: Path, samples: np.ndarray, rate: int = 44100) -> None:
    """16-bit mono PCM, with the standard library's wave module."""
    import wave

    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
