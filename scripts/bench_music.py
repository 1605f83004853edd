"""Music sync benchmark: do the frames of largest change land on the clicks of a click track?

A synthetic click track (clicks at irregular times) drives walks on builtin:shapes (pictures
that mean something, offline). For every walk and mode the video is read back and measured:
- hit rate: of the K clicks, how many have one of the K largest changes within one frame of
  the frame interval whose change shows at the click (interval round(click * fps) - 1);
- r: Pearson's correlation of the change per frame with the audio envelope per frame interval;
- hit/mean: the mean change at the clicks' intervals over the mean change (how visible a hit is).

Modes: even (--audio-react 0: even motion, the audio only muxed), peer (--no-smooth: the audio
moves t, as stable-diffusion-videos does), default (--audio-react 0.8) and full (1).

    python scripts/bench_music.py [--fps 12] [--seconds 6] [--out /tmp/bench_music]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from latentwalk.audio import click_track, write_wav
from latentwalk.cli import app
from latentwalk.inspect import inspect_video

WALKS = {
    "seed walk red circle 1->2": ["seed-walk", "a large red circle on a blue background", "--seeds", "1,2"],
    "seed walk yellow square 4->5": ["seed-walk", "a small yellow square on a black background", "--seeds", "4,5"],
    "prompt walk red circle -> yellow square": ["prompt-walk", "circle-square.txt"],
    "prompt walk purple triangle -> green circle": ["prompt-walk", "triangle-circle.txt"],
}
PROMPTS = {
    "circle-square.txt": "a large red circle on a blue background | seed=1\na small yellow square on a gray background | seed=1\n",
    "triangle-circle.txt": "a large purple triangle on a black background | seed=3\na small green circle on a gray background | seed=3\n",
}
MODES = {
    "even": ["--audio-react", "0"],
    "peer (t driven)": ["--no-smooth"],
    "default (0.8)": [],
    "full (1)": ["--audio-react", "1"],
}


def clicks(seconds: float, seed: int = 7) -> list[float]:
    """Irregular clicks, at least 0.35 s apart, none in the first or last 0.3 s."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    t = 0.3
    while True:
        t += rng.uniform(0.35, 1.1)
        if t > seconds - 0.3:
            return times
        times.append(round(t, 3))


def measure(changes: list[float], envelope: list[float], times: list[float], fps: float) -> dict:
    changes_a = np.asarray(changes)
    k = len(times)
    top = set(np.argsort(changes_a)[::-1][:k].tolist())
    targets = [round(c * fps) - 1 for c in times]
    hits = sum(1 for j in targets if top & {j - 1, j, j + 1})
    n = min(len(changes), len(envelope))
    r = float(np.corrcoef(changes_a[:n], np.asarray(envelope[:n]))[0, 1])
    at_hits = np.mean([changes_a[j] for j in targets if 0 <= j < len(changes_a)])
    return {"hits": hits, "clicks": k, "r": round(r, 3), "hit_over_mean": round(float(at_hits / changes_a.mean()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_music_"))
    out.mkdir(parents=True, exist_ok=True)
    times = clicks(args.seconds)
    write_wav(out / "clicks.wav", click_track(times, args.seconds))
    for name, text in PROMPTS.items():
        (out / name).write_text(text)
    print(f"{len(times)} clicks at {times} s; {args.fps:g} fps, {args.seconds:g} s; videos in {out}", flush=True)
    import os

    os.chdir(out)
    rows = []
    for walk, command in WALKS.items():
        for mode, flags in MODES.items():
            if mode not in args.modes.split(","):
                continue
            video = f"{len(rows)}.mp4"
            result = CliRunner().invoke(app, [*command, "--preset", "shapes", "--fps", f"{args.fps:g}", "--audio", "clicks.wav",
                                              *flags, "-o", video, "--overwrite", "--json", "-q"])  # fmt: skip
            if result.exit_code != 0:
                sys.exit(f"{walk} / {mode}: exit {result.exit_code}: {result.output}")
            summary = json.loads(result.stdout.strip().splitlines()[-1])
            manifest = json.loads(Path(video + ".json").read_text())
            envelope = manifest["job"]["audio"]["envelope"]
            changes = inspect_video(Path(video))["changes"]
            row = {"walk": walk, "mode": mode, **measure(changes, envelope, times, args.fps), "renders": summary["renders"],
                   "frames": summary["frames"], "json_r": summary["audio"]["correlation"]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| walk | mode | hit rate | r | hit/mean | renders/frame |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['walk']} | {row['mode']} | {row['hits']}/{row['clicks']} | {row['r']:.2f} | {row['hit_over_mean']:.1f} | {row['renders'] / row['frames']:.2f} |")
    print()
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        hits = sum(r["hits"] for r in mine) / sum(r["clicks"] for r in mine)
        print(f"{mode}: hit rate {hits:.0%}, mean r {np.mean([r['r'] for r in mine]):.2f}, mean hit/mean {np.mean([r['hit_over_mean'] for r in mine]):.1f}")


if __name__ == "__main__":
    main()
