"""`latentwalk concat`: the segments of a render split with --shard, joined without re-encoding.

Each segment was encoded on its own with the same encoder settings (the job fixes codec, CRF,
size and frame rate), so ffmpeg's concat demuxer can copy their streams one after the other:
the joined video has every frame exactly as the segments hold them. The sound, if the walk has
music, is muxed once over the whole video, as an unsplit render would. The segments' manifests
say which render and which part each is: a missing, repeated or foreign part is refused before
anything is written.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg

from latentwalk import manifest
from latentwalk.errors import BadInput, LatentwalkError
from latentwalk.job import Job, render_id
from latentwalk.video import (
    FORMATS,
    check_readable_file,
    check_writable_file,
    mux_audio,
    partial_path,
    publish,
    video_partial_path,
)


def read_parts(segments: list[Path]) -> list[tuple[Path, dict, Job]]:
    """Each segment with its manifest and job, in part order; checked to be the parts 1..N of
    one render, each once."""
    if not segments:
        raise BadInput("give the segments to join")
    parts = []
    for segment in segments:
        check_readable_file(segment, "segment")
        side = manifest.sidecar(segment)
        if not side.is_file():
            raise BadInput(f"segment {str(segment)!r} has no manifest beside it ({side.name}): concat joins the outputs of --shard runs")
        data = manifest.read(side)
        job = Job.from_dict(data["job"])
        if job.shard is None:
            raise BadInput(f"{str(segment)!r} is a whole video, not a part rendered with --shard")
        parts.append((segment, data, job))
    first_segment, _, first = parts[0]
    n, render = first.shard["n"], render_id(first)
    seen: dict[int, Path] = {}
    for segment, data, job in parts:
        if render_id(job) != render or job.shard["n"] != n:
            raise BadInput(f"{str(segment)!r} is part of another render than {str(first_segment)!r}")
        if Path(data.get("output", "")).suffix.lower() != segment.suffix.lower():
            raise BadInput(f"segment {str(segment)!r} is named as another format than its manifest's ({data.get('output')!r})")
        k = job.shard["k"]
        if k in seen:
            raise BadInput(f"{str(seen[k])!r} and {str(segment)!r} are both part {k} of {n}")
        seen[k] = segment
    missing = [str(k) for k in range(1, n + 1) if k not in seen]
    if missing:
        raise BadInput(f"part{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {n} missing")
    suffixes = {segment.suffix.lower() for segment, _, _ in parts}
    if len(suffixes) > 1:
        raise BadInput(f"the segments are of different formats ({', '.join(sorted(suffixes))}); a stream copy joins one format")
    # Bit for bit only on one device type, dtype and batch size; and the joined manifest's
    # re-render makes every batch at one size.
    for key, what in (("width", "size"), ("height", "size"), ("batch_size", "batch size"), ("dtype", "dtype")):
        values = {str(d["resolved"].get(key)) for _, d, _ in parts}
        if len(values) > 1:
            raise BadInput(f"the segments were rendered at different {what}s ({', '.join(sorted(values))}); render every part alike (give --batch-size)")
    kinds = {str(d["resolved"].get("device", "")).split(":")[0] for _, d, _ in parts}
    if len(kinds) > 1:
        raise BadInput(f"the segments were rendered on different device types ({', '.join(sorted(kinds))}): their frames differ")
    return sorted(parts, key=lambda part: part[2].shard["k"])


def joined_job(parts: list[tuple[Path, dict, Job]]) -> Job:
    """The whole render's job, as one run would have recorded it: positions, batches and jumps
    of every part, in order. Its manifest re-renders the joined video."""
    job = parts[0][2]
    whole = Job.from_dict({**job.to_dict(), "shard": None, "plan": None, "chunks": None})
    whole.plan = [f for _, _, part in parts for f in part.plan]
    whole.chunks = [chunk for _, _, part in parts for chunk in (part.chunks or [])]
    whole.discontinuities = [d for _, _, part in parts for d in (part.discontinuities or [])] if job.smooth else None
    whole.check()
    return whole


def join(segments: list[Path], output: Path, overwrite: bool, audio: Path | None = None) -> dict:
    """Write the joined video (and its manifest) at `output`; returns the summary."""
    parts = read_parts(segments)
    suffix = parts[0][0].suffix.lower()
    if output.suffix.lower() != suffix:
        raise BadInput(f"output {str(output)!r}: the segments are {suffix}, so the joined video is too")
    if any(output.resolve() == segment.resolve() for segment, _, _ in parts):
        raise BadInput(f"output {str(output)!r} is one of the segments")
    check_writable_file(output, overwrite)
    check_writable_file(manifest.sidecar(output), overwrite)
    whole = joined_job(parts)
    sound = None
    if whole.audio is not None:
        sound = manifest.find_audio(whole.audio, manifest.sidecar(parts[0][0]), audio)
        whole.audio["file"] = str(sound.resolve())  # where it is now, for the joined manifest
    elif audio is not None:
        raise BadInput("--audio: the segments' walk has no audio")
    tmp, stream = partial_path(output), video_partial_path(output)
    target = stream if sound is not None else tmp
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        for segment, _, _ in parts:
            # The concat demuxer's quoting: ' inside a quoted name is '\''.
            listing.write("file '" + os.path.abspath(segment).replace("'", "'\\''") + "'\n")
    try:
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "concat", "-safe", "0", "-i", listing.name, "-map", "0:v:0", "-c", "copy",
            *(["-movflags", "+faststart"] if suffix == ".mp4" else []),
            "-f", FORMATS[suffix]["muxer"], str(target),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, start_new_session=True)
        if result.returncode != 0:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            raise LatentwalkError(f"ffmpeg failed joining the segments: {lines[-1] if lines else f'exit {result.returncode}'}")
        frames = whole.frame_count
        if sound is not None:
            mux_audio(stream, tmp, sound, float(whole.audio["start"]), frames / whole.settings.fps, suffix)
        try:
            publish(tmp, output, overwrite)
        except FileExistsError:
            raise LatentwalkError(f"{str(output)!r} appeared while joining; not replaced") from None
    finally:
        os.unlink(listing.name)
        tmp.unlink(missing_ok=True)
        stream.unlink(missing_ok=True)
    first = parts[0][1]
    facts = {
        "smooth": whole.smooth, "renders": sum(d.get("renders", 0) for _, d, _ in parts),
        "keyframe_frames": [i for _, d, _ in parts for i in d.get("keyframe_frames", [])],
        "discontinuities": whole.discontinuities or [],
        "segments": [{"file": str(s), "part": j.shard["k"], "first": j.shard["first"], "end": j.shard["end"]} for s, _, j in parts],
    }  # fmt: skip
    # Each picture's frame, from the part that rendered it (a keyframe between two parts is in both).
    pictures = {p["keyframe"]: p for _, d, _ in parts for p in d.get("pictures", [])}
    if pictures:
        facts["pictures"] = [pictures[k] for k in sorted(pictures)]
    data = {**first, **facts, "output": output.name, "job": whole.to_dict()}
    for key in ("smoothness", "audio"):  # measured per part: not the whole video's
        data.pop(key, None)
    manifest.write(data, manifest.sidecar(output), overwrite)
    return {"command": "concat", "output": str(output), "frames": frames, "parts": len(parts), **{k: facts[k] for k in ("renders", "segments", "pictures") if k in facts}}
