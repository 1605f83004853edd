"""The video sink: frames streamed into imageio-ffmpeg's bundled ffmpeg, output written atomically.

ffmpeg writes to a hidden temporary file beside the target; the file appears at the output path
only when ffmpeg has exited cleanly, so the output path never holds a partial video.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import imageio_ffmpeg
import numpy as np
from PIL import Image, PngImagePlugin

from latentwalk.errors import BadInput, LatentwalkError

# Container and codec by extension. CRF: lower is better quality; None keeps the default.
# audio: the sound's codec, or None where the format has no sound.
FORMATS = {
    ".mp4": dict(muxer="mp4", default_crf=18, audio=["-c:a", "aac", "-b:a", "192k"]),
    ".webm": dict(muxer="webm", default_crf=32, audio=["-c:a", "libopus", "-b:a", "160k"]),
    ".gif": dict(muxer="gif", default_crf=None, audio=None),
}


def check_video_path(path: Path, overwrite: bool) -> None:
    """Everything about the output path that can be known before rendering."""
    if path.is_dir():
        raise BadInput(f"output {str(path)!r} is a directory; give a file name")
    if path.suffix.lower() not in FORMATS:
        raise BadInput(
            f"output {str(path)!r}: unknown video extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    check_writable_file(path, overwrite)


def check_writable_file(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise BadInput(f"output {str(path)!r} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise BadInput(f"output {str(path)!r} exists; pass --overwrite to replace it")
    check_writable_dir(path.parent, "output directory")


def check_readable_file(path: Path, what: str = "", directory: str = "") -> None:
    """An input file: there, not a folder, readable, not empty. `what` names it in messages
    ("audio file"); `directory` is said of a folder (", not a video")."""
    name = f"{what} {str(path)!r}" if what else repr(str(path))
    if not path.exists():
        raise BadInput(f"{name} does not exist")
    if path.is_dir():
        raise BadInput(f"{name} is a directory{directory}")
    try:
        with path.open("rb") as f:
            empty = not f.read(1)
    except OSError as e:
        raise BadInput(f"{name} cannot be read ({e.strerror})") from None
    if empty:
        raise BadInput(f"{name} is empty")


def check_writable_dir(folder: Path, what: str) -> None:
    """By creating a file there: permission bits say nothing to root, or on read-only mounts."""
    if not folder.is_dir():
        raise BadInput(f"{what} {str(folder)!r} does not exist")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise BadInput(f"{what} {str(folder)!r} is not writable ({e.strerror})") from None


def codec_args(suffix: str, crf: int | None) -> list[str]:
    suffix = suffix.lower()
    if suffix == ".mp4":
        crf = FORMATS[".mp4"]["default_crf"] if crf is None else crf
        # yuv420p and faststart: plays in browsers and phones, starts before it is downloaded.
        return ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-movflags", "+faststart"]
    if suffix == ".webm":
        crf = FORMATS[".webm"]["default_crf"] if crf is None else crf
        return ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", str(crf), "-b:v", "0"]
    # GIF: one palette for the whole clip (ffmpeg buffers the frames for palettegen itself).
    return ["-filter_complex", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-loop", "0"]


def check_audio_format(path: Path) -> None:
    if FORMATS.get(path.suffix.lower(), {}).get("audio", True) is None:
        raise BadInput(f"output {str(path)!r}: a {path.suffix.lower()} has no sound; write .mp4 or .webm to keep the --audio")


class VideoWriter:
    """Stream RGB frames into ffmpeg. Use as a context manager: an exception aborts the file.

    ffmpeg writes `.NAME.partial` beside the output. The caller holds the output's lock, so a
    leftover of that name is a crashed run's and is replaced. With `audio` (file, start of the
    section in seconds), the frames go to `.NAME.video.partial` first and the sound is muxed in
    when the video is complete, cut to the video's exact length (see `mux_audio`)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, crf: int | None = None, overwrite: bool = False,
                 audio: tuple[Path, float] | None = None):  # fmt: skip
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.overwrite = overwrite
        self.audio = audio
        self.frames = 0
        self.tmp = partial_path(self.path)
        self.stream = self.tmp if audio is None else video_partial_path(self.path)
        for leftover in {self.tmp, self.stream}:
            leftover.unlink(missing_ok=True)
        self._log = tempfile.TemporaryFile()
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
            *codec_args(self.path.suffix, crf),
            "-f", FORMATS[self.path.suffix.lower()]["muxer"], str(self.stream),
        ]  # fmt: skip
        # Its own session: a Ctrl-C at the terminal goes to us, and we stop ffmpeg in order.
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True
        )

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame of shape {frame.shape} {frame.dtype}, expected ({self.height}, {self.width}, 3) uint8")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except (BrokenPipeError, OSError):
            self._proc.wait()
            raise LatentwalkError(f"ffmpeg stopped while writing {str(self.path)!r}: {self._ffmpeg_said()}") from None
        self.frames += 1

    def close(self) -> None:
        """Finish the video and move it into place."""
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        code = self._proc.wait()
        if code != 0:
            said = self._ffmpeg_said()
            self.abort()
            raise LatentwalkError(f"ffmpeg failed writing {str(self.path)!r}: {said}")
        self._log.close()
        if self.audio is not None:
            try:
                mux_audio(self.stream, self.tmp, *self.audio, self.frames / self.fps, self.path.suffix)
            except BaseException:
                self.abort()
                raise
            self.stream.unlink(missing_ok=True)
        try:
            publish(self.tmp, self.path, self.overwrite)
        except FileExistsError:
            kept = unique_name(self.path)
            os.replace(self.tmp, kept)
            raise LatentwalkError(f"{str(self.path)!r} appeared while rendering; the video is kept as {str(kept)!r}") from None

    def abort(self) -> None:
        """Stop ffmpeg and remove the temporary file; the output path is left as it was."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        self.tmp.unlink(missing_ok=True)
        self.stream.unlink(missing_ok=True)
        self._log.close()

    def _ffmpeg_said(self) -> str:
        """ffmpeg's last line, or what ended it: a signal, or the file size limit."""
        code = self._proc.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            if -code == signal.SIGXFSZ:
                return f"the file grew past the size limit (ffmpeg got {name}; see ulimit -f)"
            return f"ffmpeg was killed by {name}"
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        said = lines[-1] if lines else "no message"
        return f"{said} (exit {code})" if code else said

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def partial_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial")


def video_partial_path(output: Path) -> Path:
    """The frames, before the sound is muxed in."""
    return output.with_name(f".{output.name}.video.partial")


def mux_audio(video: Path, out: Path, audio: Path, start: float, seconds: float, suffix: str) -> None:
    """Copy the video stream and add the audio section [start, start + seconds), encoded for the
    container (AAC in .mp4, Opus in .webm). The sound is cut at the video's length and padded
    with silence if the file ends sooner, so both end together. No shift: ffmpeg records the
    encoder's priming delay (an MP4 edit list, WebM's CodecDelay) and players skip it, and the
    section is cut as audio.py decodes it for the analysis."""
    from latentwalk.audio import section_args

    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", str(video), *section_args(start, seconds), "-i", os.path.abspath(audio),
        "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *FORMATS[suffix.lower()]["audio"],
        "-af", f"apad=whole_dur={seconds:.6f}", "-t", f"{seconds:.6f}",
        *(["-movflags", "+faststart"] if suffix.lower() == ".mp4" else []),
        "-f", FORMATS[suffix.lower()]["muxer"], str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, start_new_session=True)
    if result.returncode != 0:
        out.unlink(missing_ok=True)
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        raise LatentwalkError(f"ffmpeg failed muxing the audio {str(audio)!r}: {lines[-1] if lines else f'exit {result.returncode}'}")


def unique_name(path: Path) -> Path:
    """`walk.mp4` -> `walk.1.mp4`, `walk.2.mp4`, ...: the first that does not exist."""
    for n in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise LatentwalkError(f"no free name beside {str(path)!r}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes private (0600) files; what we publish gets the permissions any new file would.
FILE_MODE = 0o666 & ~_umask()


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a finished file into place. Without overwrite, never replace a file that appeared
    meanwhile (a hard link fails if the name exists): FileExistsError, and tmp is left."""
    os.chmod(tmp, FILE_MODE)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def write_new(path: Path, write: Callable[[BinaryIO], None], overwrite: bool) -> None:
    """Write a small file atomically (temporary file, then publish)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        publish(Path(tmp), path, overwrite)
    except FileExistsError:
        raise LatentwalkError(f"{str(path)!r} appeared while rendering; not replaced") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def png_bytes(image: np.ndarray, text: dict[str, str]) -> bytes:
    """A PNG with text chunks. Deterministic: the same frame and text give the same bytes."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, str(value))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
