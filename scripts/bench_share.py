"""Shared trajectories, measured: six smooth walks on builtin:shapes, each rendered with
--share and --no-share through the real CLI, at the preset's batch size.

    python scripts/bench_share.py                 # 24 frames a segment
    python scripts/bench_share.py --frames 48
    python scripts/bench_share.py --model DIR --size 512x512 --steps 20   # wall time of another model
    python scripts/bench_share.py --frames 96 --spread   # and the unshared CV's own spread

Per walk it prints: model calls per frame (denoising steps summed over renders, over frames),
model calls as made (rows side by side count once; the same from run to run), wall time, the
CV and max/mean of the change between consecutive frames, the mean difference of the shared
frames to the unshared ones (0-255), and ghost frames: frames with two copies of the shape
where both neighbours have one (shapes.subjects), not counting the crossfade frames that the
even-motion work blends over a discontinuity on purpose (counted apart). Frames are read from
the renders' PNGs, not the video: its codec can split one shape in two. Every number
comes from this run; run it alone (two cores shared with other work time nothing).

With --spread, each walk is also rendered unshared under four changes that leave its quality
alone (one sampling step more and one less, guidance 0.1 higher and lower): how far its CV
moves then is how far any other change of the in-between pictures can move it, sharing's
included, so a shared CV within that spread is no worse than the unshared walk can tell.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import bench_smooth  # beside this script

# bench_smooth's walks (issue 12's, one with a teleport) but its loop of three.
WALKS = bench_smooth.WALKS[:6]


def ghosts(frames, blended: set[int]) -> int:
    from latentwalk.shapes import subjects

    counts = [subjects(f) for f in frames]
    return sum(
        1 for i in range(1, len(frames) - 1)
        if i not in blended and counts[i] >= 2 and counts[i - 1] <= 1 and counts[i + 1] <= 1
    )  # fmt: skip


def read_png(path: Path):
    import imageio.v3 as iio

    return iio.imread(path)[..., :3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames per segment")
    parser.add_argument("--walks", default=",".join(str(i + 1) for i in range(len(WALKS))), help="which walks, by number (1-6) [default: all]")
    parser.add_argument("--model", help="another model (a saved pipeline's folder): wall time only, no ghosts")
    parser.add_argument("--size", help="with --model: its size, e.g. 512x512")
    parser.add_argument("--steps", type=int, help="sampling steps [default: the preset's]")
    parser.add_argument("--spread", action="store_true", help="also render each walk unshared at steps +-1 and guidance +-0.1: the CV's own spread")
    args = parser.parse_args()

    import numpy as np
    from typer.testing import CliRunner

    from latentwalk.cli import app
    from latentwalk.presets import load_preset

    preset = load_preset("shapes")
    steps, guidance = args.steps or preset["steps"], preset["guidance"]
    # Changes that leave a walk's quality alone, for --spread.
    neutral = {f"{steps - 1} steps": ["--steps", str(steps - 1)], f"{steps + 1} steps": ["--steps", str(steps + 1)],
               f"guidance {guidance - 0.1:g}": ["--guidance", f"{guidance - 0.1:g}"], f"guidance {guidance + 0.1:g}": ["--guidance", f"{guidance + 0.1:g}"]}  # fmt: skip

    bench_smooth.workspace("bench-share-")
    runner = CliRunner()
    # Imports and the first model load are not any walk's time.
    runner.invoke(app, ["generate", "a red circle", "--preset", "shapes", "--steps", "1", "-o", "warm.png", "-q"])
    extra = ["--preset", "shapes", "--frames", str(args.frames)]
    if args.model:
        extra += ["--model", args.model] + (["--size", args.size] if args.size else [])
    if args.steps:
        extra += ["--steps", str(args.steps)]
    model = args.model or "builtin:shapes"
    print(f"{model}, {args.frames} frames a segment, preset shapes (DDIM, {steps} steps, guidance {guidance:g}, batch 8), smooth walks with crossfades")
    print("| walk | mode | frames | calls/frame | calls as made | seconds | CV | max/mean | diff to unshared | ghosts | crossfade frames |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    def walk_run(what: str, options: list[str], out: str):
        """One walk through the CLI: its --json summary, its manifest, its frames from the renders'
        PNGs (lossless: the video's codec can split or merge a shape) and its seconds."""
        folder = Path(out).with_suffix("")
        started = time.perf_counter()
        result = runner.invoke(app, [*options, "-o", out, "--frames-dir", str(folder), "--json", "-q"])
        seconds = time.perf_counter() - started
        if result.exit_code != 0:
            sys.exit(f"{what} failed: {result.output}")
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        manifest = json.loads(Path(out + ".json").read_text())
        return summary, manifest, np.stack([read_png(p) for p in sorted(folder.glob("frame_*.png"))]), seconds

    def difference(frames, base) -> float:
        """Mean difference of two walks' frames, 0-255 (nan for walks of other lengths)."""
        return float(np.abs(frames.astype(np.float32) - base.astype(np.float32)).mean()) if frames.shape == base.shape else float("nan")

    rows = []
    for label, walk in [WALKS[int(i) - 1] for i in args.walks.split(",")]:
        got = {}
        for mode in ("--no-share", "--share"):
            summary, manifest, frames, seconds = walk_run(f"{label} ({mode})", [*walk, *extra, mode], f"{mode.strip('-')}-{len(rows)}.mp4")
            blended = {entry[0] for entry in manifest["job"]["plan"] if len(entry) > 4}
            got[mode] = {"summary": summary, "seconds": seconds, "frames": frames, "blended": blended,
                         "ghosts": None if args.model else ghosts(frames, blended)}  # fmt: skip
        base = got["--no-share"]["frames"]
        for mode in ("--no-share", "--share"):
            g = got[mode]
            s, stats = g["summary"], g["summary"]["smoothness"]
            g["calls"] = s["model_calls"] / s["frames"]
            print(f"| {label} | {mode[2:]} | {s['frames']} | {g['calls']:.1f} | {s['batches']} | {g['seconds']:.1f} | {stats['cv']:.3f} | "
                  f"{stats['max_over_mean']:.2f} | {difference(g['frames'], base):.2f} | {g['ghosts'] if g['ghosts'] is not None else '-'} | {len(g['blended'])} |")  # fmt: skip
            sys.stdout.flush()
        if args.spread:
            got["spread"] = {}
            for k, (name, change) in enumerate(neutral.items()):
                # The change comes after `extra`: a later option wins.
                summary, _, frames, _ = walk_run(f"{label} (unshared, {name})", [*walk, *extra, *change, "--no-share"], f"spread-{len(rows)}-{k}.mp4")
                got["spread"][name] = (summary["smoothness"]["cv"], difference(frames, base))
            got["spread_cvs"] = [got["--no-share"]["summary"]["smoothness"]["cv"]] + [cv for cv, _ in got["spread"].values()]
        rows.append((label, got))
    print()
    if args.spread:
        print("The unshared walks' CV under changes that leave their quality alone (diff: to the unshared frames, 0-255):")
        for label, got in rows:
            cvs = got["spread_cvs"]
            print(f"- {label}: " + ", ".join(f"{name} {cv:.3f} (diff {diff:.2f})" for name, (cv, diff) in got["spread"].items())
                  + f"; spread {min(cvs):.3f}-{max(cvs):.3f}, shared {got['--share']['summary']['smoothness']['cv']:.3f}")  # fmt: skip
        print()
    calls = [got["--share"]["calls"] / got["--no-share"]["calls"] for _, got in rows]
    speed = [got["--no-share"]["seconds"] / got["--share"]["seconds"] for _, got in rows]
    made = [got["--no-share"]["summary"]["batches"] / got["--share"]["summary"]["batches"] for _, got in rows]
    worse = [label for label, got in rows if got["--share"]["summary"]["smoothness"]["cv"] > got["--no-share"]["summary"]["smoothness"]["cv"]]
    ghosted = sum(got["--share"]["ghosts"] or 0 for _, got in rows)
    geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))  # noqa: E731
    print(f"model calls, shared over unshared: {geo(calls):.2f} (geometric mean; target at most 0.5), worst {max(calls):.2f}")
    print(f"wall time, unshared over shared: {geo(speed):.2f}x (target at least 1.6x), least {min(speed):.2f}x")
    # Model calls as made (rows side by side count once), the same from run to run: the wall
    # time follows them where a call costs about the same however many rows it holds.
    print(f"calls as made, unshared over shared: {geo(made):.2f}x, least {min(made):.2f}x")
    # Per walk, the CV moves with any change of the in-between pictures (a placement decision
    # taken on other measurements), so the mean over the walks says more than their count.
    cvs = [(got["--share"]["summary"]["smoothness"]["cv"], got["--no-share"]["summary"]["smoothness"]["cv"]) for _, got in rows]
    evenness = [max(shared, 1e-9) / max(alone, 1e-9) for shared, alone in cvs]
    print(f"CV, shared over unshared: {geo(evenness):.2f} (geometric mean; below 1: evener shared), worst {max(evenness):.2f}")
    print(f"walks whose CV is worse shared: {', '.join(worse) or 'none'}; ghost frames shared: {ghosted} "
          f"(unshared: {sum(got['--no-share']['ghosts'] or 0 for _, got in rows)})")
    if args.spread:
        above = [label for label, got in rows if got["--share"]["summary"]["smoothness"]["cv"] > max(got["spread_cvs"])]
        print(f"walks whose shared CV is above the unshared walk's own spread ({', '.join(neutral)}): {', '.join(above) or 'none'}")


if __name__ == "__main__":
    main()
