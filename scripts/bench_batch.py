"""Batch benchmark: N short renders as one `latentwalk batch` against N separate commands.

Each separate command is a process of its own, as a shell script or cron job would run it:
it imports torch and diffusers and loads the model every time. The batch runs the same jobs in
one process, loading the model once. Renders on builtin:shapes (offline, real pictures), half
stills and half short walks; the ratio of wall times is printed (target: at least 3x).

    python scripts/bench_batch.py [--jobs 20] [--out /tmp/bench_batch]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def jobs(count: int) -> list[dict]:
    """Alternating stills and 3-frame walks, each to its own output, as [[job]] tables."""
    out = []
    for i in range(count):
        if i % 2 == 0:
            out.append({"command": "generate", "prompt": "a large red circle on a blue background", "seeds": str(i), "output": f"still-{i}.png"})
        else:
            out.append({"command": "seed-walk", "prompt": "a small yellow square on a black background", "seeds": f"{i},{i + 1}",
                        "frames": 2, "smooth": False, "output": f"walk-{i}.mp4"})  # fmt: skip
        out[-1].update(preset="shapes", steps=8)
    return out


def as_argv(job: dict) -> list[str]:
    """The command line the job stands for."""
    argv = [job["command"]]
    for key, value in job.items():
        if key in ("command", "prompt"):
            continue
        flag = "--" + key.replace("_", "-")
        argv += ([flag] if value else [f"--no-{key}"]) if isinstance(value, bool) else [flag, str(value)]
    return [*argv, "--quiet", "--", job["prompt"]]


def as_toml(tables: list[dict]) -> str:
    def value(v) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else str(v) if isinstance(v, int) else f'"{v}"'

    return "\n".join("[[job]]\n" + "".join(f"{k} = {value(v)}\n" for k, v in t.items()) for t in tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_batch-"))
    argvs = jobs(args.jobs)
    exe = [sys.executable, "-m", "latentwalk"]

    separate = root / "separate"
    shutil.rmtree(separate, ignore_errors=True)
    separate.mkdir(parents=True)
    started = time.perf_counter()
    for argv in argvs:
        subprocess.run([*exe, *as_argv(argv)], cwd=separate, check=True)
    separate_s = time.perf_counter() - started

    batched = root / "batch"
    shutil.rmtree(batched, ignore_errors=True)
    batched.mkdir(parents=True)
    (batched / "jobs.toml").write_text(as_toml(argvs))
    started = time.perf_counter()
    subprocess.run([*exe, "batch", "jobs.toml", "--quiet"], cwd=batched, check=True)
    batch_s = time.perf_counter() - started

    made = sorted(p.name for p in batched.iterdir() if p.suffix in (".png", ".mp4"))
    assert made == sorted(p.name for p in separate.iterdir() if p.suffix in (".png", ".mp4")), "the two runs made different files"
    print(f"{args.jobs} jobs on builtin:shapes ({len(made)} outputs)")
    print(f"separate commands: {separate_s:7.1f} s ({separate_s / args.jobs:.2f} s a job)")
    print(f"one batch:         {batch_s:7.1f} s ({batch_s / args.jobs:.2f} s a job)")
    print(f"ratio: {separate_s / batch_s:.2f}x (target at least 3x)")


if __name__ == "__main__":
    main()
