"""Even motion, measured: seven walks on builtin:shapes, each rendered with uniform spacing
(--no-smooth), with the adaptive placement alone (--smooth --no-crossfade) and with the default
(--smooth, crossfades over discontinuities), through the real CLI.

    python scripts/bench_smooth.py              # 24 frames a segment
    python scripts/bench_smooth.py --frames 48

Per walk and mode it prints the change statistics of the frames the video was made of (change =
mean absolute difference of consecutive frames, 0-255): CV, max/mean, ISTD, renders over frames
and the discontinuities found; then the geometric mean of the CV ratios (uniform over smooth).
Every number comes from this run. Run it alone: two cores shared with other work time nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

# The walks of issue 12's measurements (single segments, one with a teleport) and longer ones,
# where each segment keeps its own frame count (so their different paces stay in the CV).
WALKS = [
    ("seed walk, red circle 1-2", ["seed-walk", "a large red circle on a blue background", "--seeds", "1,2"]),
    ("seed walk, red circle 2-3", ["seed-walk", "a large red circle on a blue background", "--seeds", "2,3"]),
    ("seed walk, purple triangle 7-8", ["seed-walk", "a large purple triangle on a gray background", "--seeds", "7,8"]),
    ("seed walk, yellow square 4-5-6", ["seed-walk", "a small yellow square on a black background", "--seeds", "4,5,6"]),
    ("prompt walk, red circle to yellow square", ["prompt-walk", "story1.txt"]),
    ("prompt walk, purple triangle to green circle", ["prompt-walk", "story2.txt"]),
    ("prompt walk, loop of three", ["prompt-walk", "story3.txt", "--loop"]),
]
STORIES = {
    "story1.txt": "a large red circle on a blue background\na small yellow square on a blue background\n",
    "story2.txt": "a large purple triangle on a black background\na small green circle on a gray background\n",
    "story3.txt": "a large white square on a green background | seed=5\na small blue triangle on a black background | seed=6\na large red circle on a gray background | seed=7\n",
}
MODES = [("uniform", ["--no-smooth"]), ("smooth", ["--smooth", "--no-crossfade"]), ("default", ["--smooth"])]


def workspace(prefix: str) -> Path:
    """A fresh folder to run the walks in, with its own work cache, offline, the stories written."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["LATENTWALK_CACHE"] = str(work / "cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    for name, text in STORIES.items():
        (work / name).write_text(text)
    os.chdir(work)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames per segment (at least 24 for the issue's targets)")
    args = parser.parse_args()

    from typer.testing import CliRunner

    from latentwalk.cli import app

    workspace("bench-smooth-")
    runner = CliRunner()
    print(f"builtin:shapes, {args.frames} frames a segment, preset shapes (DDIM, 20 steps, guidance 5, 64px)")
    print("| walk | mode | frames | renders | renders/frames | CV | max/mean | ISTD | 1-Gini | discontinuities |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    table: dict[str, dict[str, dict]] = {}
    for label, walk in WALKS:
        for mode, flags in MODES:
            out = f"{mode}-{len(table)}.mp4"
            result = runner.invoke(app, [*walk, "--preset", "shapes", "--frames", str(args.frames), *flags, "-o", out, "--json", "-q"])
            if result.exit_code != 0:
                sys.exit(f"{label} ({mode}) failed: {result.output}")
            summary = json.loads(result.stdout.strip().splitlines()[-1])
            stats = summary["smoothness"]
            jumps = summary["discontinuities"]
            table.setdefault(label, {})[mode] = {**stats, "renders": summary["renders"], "jumps": jumps}
            where = ", ".join(f"frame {j['frame']} ({j['over_mean']}x)" for j in jumps) or "-"
            print(f"| {label} | {mode} | {stats['frames']} | {summary['renders']} | {summary['renders'] / stats['frames']:.2f} | "
                  f"{stats['cv']:.3f} | {stats['max_over_mean']:.2f} | {stats['istd']:.4f} | {stats['smoothness_aid']:.3f} | {where} |")  # fmt: skip
            sys.stdout.flush()
    print()
    for mode in ("smooth", "default"):
        ratios = [rows["uniform"]["cv"] / max(rows[mode]["cv"], 1e-9) for rows in table.values()]
        worse = [label for label, rows in table.items() if rows[mode]["cv"] > rows["uniform"]["cv"]]
        renders = max(rows[mode]["renders"] / rows[mode]["frames"] for rows in table.values())
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"{mode}: CV ratio uniform/{mode} per walk {', '.join(f'{r:.2f}' for r in ratios)}; "
              f"geometric mean {geomean:.2f}x; walks worse than uniform: {len(worse)}; most renders/frames {renders:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
