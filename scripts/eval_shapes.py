"""Score a shapes model: generate each held-out caption (never seen in training) with several
seeds and read the pictures back with the numpy scorer in latentwalk/shapes.py.

    python scripts/eval_shapes.py                        # builtin:shapes
    python scripts/eval_shapes.py --model build/shapes/pipeline --seeds 8 --grid grid.png

Prints per-attribute accuracy and all four at once, as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from latentwalk import shapes
from latentwalk.backend import Backend, load_pipeline


def generate(backend: Backend, scenes: list[shapes.Scene], seeds: list[int], steps: int, guidance: float, batch: int = 16):
    """(scene, image) for every scene and seed, batched."""
    jobs = [(scene, seed) for scene in scenes for seed in seeds]
    out = []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        conds = [backend.conditioning(scene.caption, "") for scene, _ in chunk]
        cond = {name: torch.cat([c[name] for c in conds]) for name in conds[0]}
        noise = torch.cat([backend.noise(seed, shapes.SIZE, shapes.SIZE) for _, seed in chunk])
        images = backend.render(noise, cond, steps, guidance)
        out += [(scene, image) for (scene, _), image in zip(chunk, images)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:shapes")
    parser.add_argument("--seeds", type=int, default=4, help="images per caption")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="score the training captions instead")
    parser.add_argument("--grid", type=Path, help="also save the images as one PNG")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    backend = Backend(load_pipeline(args.model, torch.float32), args.model, device, torch.float32)
    scenes = shapes.training_scenes() if args.train else shapes.held_out()
    started = time.perf_counter()
    pairs = generate(backend, scenes, list(range(args.seeds)), args.steps, args.guidance)
    seconds = time.perf_counter() - started
    result = {name: round(value, 3) for name, value in shapes.score(pairs).items()}
    result.update(model=args.model, captions=len(scenes), images=len(pairs), steps=args.steps,
                  guidance=args.guidance, seconds_per_image=round(seconds / len(pairs), 3))  # fmt: skip
    print(json.dumps(result))
    if args.grid:
        from PIL import Image

        rows = [np.concatenate([image for _, image in pairs[i : i + args.seeds]], axis=1) for i in range(0, len(pairs), args.seeds)]
        Image.fromarray(np.concatenate(rows, axis=0)).save(args.grid)


if __name__ == "__main__":
    main()
