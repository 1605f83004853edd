"""Walks between your own pictures, measured: pictures drawn by builtin:shapes' scene generator
become image= keyframes of smooth walks through the real CLI, at the shapes preset's settings.

    python scripts/bench_images.py
    python scripts/bench_images.py --frames 24 --compare    # also: inversion's guidance, 1 or the walk's

Per image keyframe it prints the mean difference (0-255) of the walk's frame there to the
picture (what --json reports), whether shapes.classify reads the picture's scene back from that
frame, and per walk the evenness of its motion (CV and max/mean of the change between
consecutive frames). Targets (issue 19): difference at most 8, every scene read back.
`--compare` adds, per picture, what inverting under guidance 1 (and sampling at the walk's)
would give instead of inverting under the walk's own guidance, which latentwalk does.
Every number comes from this run; run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import bench_smooth  # beside this script

# (name, scene, caption written in the prompts file or None for a picture without words)
PICTURES = [
    ("circle.png", ("large", "red", "circle", "blue"), True),
    ("square.jpg", ("small", "yellow", "square", "black"), True),
    ("triangle.webp", ("large", "green", "triangle", "gray"), True),
    ("purple.png", ("large", "purple", "square", "green"), True),
    ("white.png", ("small", "white", "triangle", "blue"), False),
]
WALKS = [
    ("four pictures", "pictures.txt", ["circle.png", "square.jpg", "triangle.webp", "purple.png"]),
    ("prompt, picture, prompt", "middle.txt", ["a large blue circle on a black background | seed=4", "triangle.webp", "a small red square on a gray background | seed=9"]),
    ("a picture without words, and back (loop)", "loop.txt", ["white.png", "circle.png"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames per segment")
    parser.add_argument("--compare", action="store_true", help="also invert each picture under guidance 1")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from latentwalk import shapes
    from latentwalk.cli import app

    bench_smooth.workspace("bench-images-")
    rng = np.random.default_rng(19)
    scenes, lines = {}, {}
    for name, attributes, captioned in PICTURES:
        scene = shapes.Scene(*attributes)
        scenes[name] = scene
        Image.fromarray(shapes.draw(scene, rng)).save(name, **({"quality": 95} if name.endswith(".jpg") else {}))
        lines[name] = f"{scene.caption if captioned else ''} | image={name}".strip()
    runner = CliRunner()
    print(f"builtin:shapes, preset shapes (DDIM, 20 steps, guidance 5, batch 8), smooth walks, {args.frames} frames a segment")
    print("| walk | keyframe | picture | difference (0-255) | scene read back | walk CV | walk max/mean |")
    print("|---|---|---|---|---|---|---|")
    worst, wrong = 0.0, 0
    for label, file, entries in WALKS:
        Path(file).write_text("\n".join(lines.get(e, e) for e in entries) + "\n")
        frames_dir = Path(f"frames-{Path(file).stem}")
        argv = ["prompt-walk", file, "--preset", "shapes", "--frames", str(args.frames), "--json", "-q", "--frames-dir", str(frames_dir),
                "-o", f"{Path(file).stem}.mp4"] + (["--loop"] if "loop" in label else [])  # fmt: skip
        result = runner.invoke(app, argv)
        if result.exit_code != 0:
            sys.exit(f"{label}: exit {result.exit_code}: {result.output}")
        summary = json.loads(result.stdout)
        keyframe_frames = summary["keyframe_frames"]
        for entry in summary["pictures"]:
            name = Path(entry["file"]).name
            index = keyframe_frames[entry["keyframe"]]
            frame = np.asarray(Image.open(frames_dir / f"frame_{index:06d}.png").convert("RGB"))
            read = shapes.classify(frame) == scenes[name]
            worst, wrong = max(worst, entry["difference"]), wrong + (not read)
            smooth = summary["smoothness"]
            print(f"| {label} | {entry['keyframe']} | {name} | {entry['difference']:.2f} | {'yes' if read else 'NO'} | {smooth['cv']:.3f} | {smooth['max_over_mean']:.2f} |")
    print(f"\nworst difference {worst:.2f} (target at most 8), scenes read back wrong: {wrong} (target 0)")
    if args.compare:
        compare(scenes, lines)


def compare(scenes: dict, lines: dict) -> None:
    """Each picture inverted under guidance 1 and under the walk's 5, sampled at 5."""
    import numpy as np
    import torch

    from latentwalk import pictures, shapes
    from latentwalk.backend import Backend, load_pipeline

    backend = Backend(load_pipeline("builtin:shapes", torch.float32), "builtin:shapes", torch.device("cpu"), torch.float32, scheduler="ddim")
    print("\n| picture | inverted under | difference (0-255) | scene read back | noise std |")
    print("|---|---|---|---|---|")
    for name, scene in scenes.items():
        picture = pictures.load(Path(name), 64, 64, "crop")
        caption = lines[name].split("|")[0].strip()
        cond = backend.conditioning(caption, "")
        for guidance in (1.0, 5.0):
            noise = backend.invert(picture, cond, 20, guidance)
            frame = backend.render(noise, cond, 20, 5.0)[0]
            read = shapes.classify(frame) == scene
            print(f"| {name} | {guidance:g} | {pictures.difference(frame, picture):.2f} | {'yes' if read else 'NO'} | {noise.std().item():.2f} |")


if __name__ == "__main__":
    main()
