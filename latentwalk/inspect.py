"""`latentwalk inspect`: how smoothly a video moves, read back from the file itself.

Frames are decoded by the bundled ffmpeg (imageio-ffmpeg) and streamed through
smoothness.Motion, so memory stays flat. A render's manifest beside the video (`walk.mp4.json`)
gives the keyframe positions; anything wrong with the manifest just means no keyframes.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw

from latentwalk.errors import BadInput
from latentwalk.smoothness import Motion
from latentwalk.video import check_readable_file, check_writable_dir, write_new

# As in latentwalk.manifest, not imported from there: that pulls in the job and model code.
MANIFEST_FORMAT = "latentwalk-manifest/1"

COLUMNS = [  # table header, summary key
    ("frames", "frames"), ("mean", "mean"), ("cv", "cv"), ("max/mean", "max_over_mean"),
    ("istd", "istd"), ("pdv", "pdv"), ("1-gini", "smoothness_aid"),
]  # fmt: skip


def inspect_video(path: Path, audio: Path | None = None, audio_start: float | None = None) -> dict:
    """The smoothness statistics of a video, plus "video", "changes" (per consecutive pair, rounded
    to 3 decimals) and "keyframes" (frame indices from the manifest beside it, or []). With
    `audio`, also "audio": its envelope per frame interval (music.py) and its correlation with
    the changes; the section starts at `audio_start`, else where the video's manifest says,
    else at 0."""
    path = Path(path)
    check_video_file(path)
    motion = Motion()
    # An absolute path: ffmpeg would take a relative name like "http:x.mp4" for a protocol.
    reader = imageio_ffmpeg.read_frames(os.path.abspath(path))
    try:
        try:
            meta = next(reader)
        except OSError as e:
            raise BadInput(f"{str(path)!r} is not a video ffmpeg can read ({ffmpeg_line(str(e))})") from None
        except Exception:  # noqa: BLE001 - its header parser fails on a file with no video stream
            raise BadInput(f"{str(path)!r} has no video stream") from None
        width, height = meta["size"]
        try:
            for data in reader:
                motion.add(np.frombuffer(data, np.uint8).reshape(height, width, 3))
        except RuntimeError as e:  # a damaged or truncated file
            first = str(e).splitlines()[0].rstrip(":")
            raise BadInput(f"{str(path)!r}: {first.lower()} ({ffmpeg_line(str(e))})") from None
    finally:
        reader.close()  # stops ffmpeg
    if motion.frames == 0:
        raise BadInput(f"{str(path)!r} has no frames")
    if motion.frames == 1:  # a PNG or JPEG decodes as a one-frame video
        raise BadInput(f"{str(path)!r} has only 1 frame (a still image?); need 2 or more to measure motion")
    result = {
        "video": str(path),
        **motion.summary(),
        "changes": [round(c, 3) for c in motion.changes],
        "keyframes": manifest_keyframes(path, motion.frames),
    }
    if audio is not None:
        result["audio"] = audio_figures(path, audio, audio_start, float(meta.get("fps") or 0), motion.changes)
    return result


def audio_figures(video: Path, audio: Path, start: float | None, fps: float, changes: list[float]) -> dict:
    """How the change per frame follows the music: the envelope the render would target, and
    Pearson's r between the two (what a render's --json reports as audio.correlation)."""
    from latentwalk.audio import analyze
    from latentwalk.music import correlation, frame_envelope

    if not fps > 0:
        raise BadInput(f"{str(video)!r} does not say its frame rate; cannot line it up with the audio")
    if start is None:
        start = manifest_audio_start(video)
    analysis = analyze(audio, start, None)
    envelope = frame_envelope(analysis.envelope, analysis.rate, fps, len(changes))
    return {"file": str(audio), "start": start, "fps": fps, "correlation": correlation(changes, envelope), "envelope": envelope}


def manifest_audio_start(video: Path) -> float:
    """The audio section's start from our manifest beside the video; 0 for anything else."""
    try:
        manifest = json.loads(video.with_name(video.name + ".json").read_text(encoding="utf-8"))
        start = manifest["job"]["audio"]["start"] if manifest.get("format") == MANIFEST_FORMAT else 0.0
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return 0.0
    return float(start) if isinstance(start, (int, float)) and start >= 0 else 0.0


def check_video_file(path: Path) -> None:
    """What we can tell before starting ffmpeg, in our words rather than its."""
    check_readable_file(path, directory=", not a video")


def ffmpeg_line(text: str) -> str:
    """The one line worth showing from imageio-ffmpeg's error, which carries ffmpeg's whole log."""
    if "does not contain any stream" in text:  # what ffmpeg says of a file without video
        return "no video stream"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no message"
    last = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1])  # "[in#0 @ 0x55...] " prefixes
    # "Error opening input files: Invalid data found when processing input" -> the reason.
    if last.startswith("Error") and ": " in last:
        last = last.rsplit(": ", 1)[1]
    return last


def manifest_keyframes(video: Path, frames: int) -> list[int]:
    """keyframe_frames from `VIDEO.json` if it is a latentwalk manifest; [] for anything else."""
    try:
        manifest = json.loads(video.with_name(video.name + ".json").read_text(encoding="utf-8"))
        found = manifest["keyframe_frames"] if manifest.get("format") == MANIFEST_FORMAT else []
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return []
    if not isinstance(found, list) or not all(type(k) is int for k in found):  # bool is an int too
        return []
    return [k for k in found if 0 <= k < frames]


def format_table(results: list[dict]) -> str:
    """A plain-text table, one row per video; with audio, its correlation with the change."""
    header = ["video"] + [title for title, _ in COLUMNS]
    rows = [[r["video"], str(r["frames"])] + [f"{r[key]:.4f}" for _, key in COLUMNS[1:]] for r in results]
    if any("audio" in r for r in results):
        header.append("audio r")
        for row, r in zip(rows, results):
            value = r.get("audio", {}).get("correlation")
            row.append("-" if value is None else f"{value:.4f}")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # The video name left-aligned, the figures right-aligned.
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    return "\n".join(line(row) for row in [header, *rows])


# ---- The plot ---------------------------------------------------------------------------------
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip
WIDTH, HEIGHT = 960, 480
TEXT, AXIS, GRID = (0, 0, 0), (64, 64, 64), (225, 225, 225)


def check_plot_path(path: Path) -> None:
    """Everything about the plot's path that can be known before reading any video."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise BadInput(f"plot {str(path)!r} must end in .png")
    if path.is_dir():
        raise BadInput(f"plot {str(path)!r} is a directory; give a file name")
    check_writable_dir(path.parent, "plot directory")


def plot(results: list[dict], path: Path) -> None:
    """A PNG line chart of the change per frame, one colour per video, keyframes as dashed
    vertical lines in the video's colour. Written atomically; an existing file is replaced (a
    plot is cheap to draw again, and naming it is asking for it)."""
    path = Path(path)
    check_plot_path(path)
    image = draw_plot(results)
    write_new(path, lambda f: image.save(f, format="PNG"), overwrite=True)


def draw_plot(results: list[dict]) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    line_height = text_size(draw, "Ag")[1] + 4
    # The plotting area, with the legend (one line per video) above it.
    left, right = 70, WIDTH - 20
    top, bottom = 12 + line_height * max(len(results), 1) + 8, HEIGHT - 45
    last_frame = max((r["frames"] - 1 for r in results), default=1) or 1
    x_step = max(1, round(nice_step(last_frame)))
    highest = max((max(r["changes"], default=0) for r in results), default=0) or 1.0
    y_step = nice_step(highest)
    y_max = y_step * math.ceil(highest / y_step)

    def x_of(frame: float) -> float:
        return left + (right - left) * frame / last_frame

    def y_of(change: float) -> float:
        return bottom - (bottom - top) * change / y_max

    # Grid lines and tick labels at round numbers.
    for i in range(round(y_max / y_step) + 1):
        y = y_of(i * y_step)
        draw.line([(left, y), (right, y)], fill=GRID)
        label = f"{i * y_step:g}"
        draw.text((left - 6 - text_size(draw, label)[0], y - line_height / 2 + 2), label, fill=TEXT)
    for frame in range(0, last_frame + 1, x_step):
        draw.line([(x_of(frame), bottom), (x_of(frame), bottom + 4)], fill=AXIS)
        label = str(frame)
        draw.text((x_of(frame) - text_size(draw, label)[0] / 2, bottom + 6), label, fill=TEXT)
    draw.rectangle([left, top, right, bottom], outline=AXIS)

    # Axis titles; the vertical one drawn on its own image and turned.
    title = "frame"
    draw.text(((left + right - text_size(draw, title)[0]) / 2, bottom + 8 + line_height), title, fill=TEXT)
    title = "change (mean |difference|, 0-255)"
    w, h = text_size(draw, title)
    turned = Image.new("RGB", (w + 2, h + 4), "white")
    ImageDraw.Draw(turned).text((1, 0), title, fill=TEXT)
    turned = turned.rotate(90, expand=True)
    image.paste(turned, (4, int((top + bottom - turned.height) / 2)))

    for index, result in enumerate(results):
        colour = PALETTE[index % len(PALETTE)]
        for key in result.get("keyframes", []):
            dashed_vertical(draw, x_of(key), top, bottom, colour)
        # Change i is between frames i and i + 1, so it is drawn halfway between them.
        points = [(x_of(i + 0.5), y_of(c)) for i, c in enumerate(result["changes"])]
        envelope = result.get("audio", {}).get("envelope")
        if envelope and len(envelope) > 1:
            # The music, scaled to the video's largest change, in a pale tint of its colour.
            top = max(result["changes"], default=0) or 1.0
            pale = tuple(round(c + (255 - c) * 0.6) for c in colour)
            draw.line([(x_of(i + 0.5), y_of(e * top)) for i, e in enumerate(envelope)], fill=pale, width=1)
        if len(points) == 1:
            (x, y), r = points[0], 3
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        elif points:
            draw.line(points, fill=colour, width=2)
        # Legend entry: a short line of the colour, then the video's name.
        y = 10 + line_height * index + line_height / 2
        draw.line([(left, y), (left + 24, y)], fill=colour, width=3)
        name = result["video"]
        if result.get("audio", {}).get("correlation") is not None:
            name += f" (pale: the audio, r = {result['audio']['correlation']:.2f})"
        draw.text((left + 30, y - line_height / 2 + 2), name, fill=TEXT)
    return image


def nice_step(span: float, steps: int = 5) -> float:
    """A round tick spacing (1, 2 or 5 times a power of ten) giving about `steps` ticks."""
    raw = span / steps
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def dashed_vertical(draw: ImageDraw.ImageDraw, x: float, top: float, bottom: float, colour) -> None:
    y = top
    while y < bottom:
        draw.line([(x, y), (x, min(y + 6, bottom))], fill=colour, width=1)
        y += 10


def text_size(draw: ImageDraw.ImageDraw, text: str) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text)
    return x1 - x0, y1 - y0
