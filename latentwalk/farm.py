"""`--ray ADDRESS`: the shards of one render as Ray tasks, on every GPU of a cluster.

Ray (the extra `latentwalk[ray]`) schedules the tasks, one GPU each where the cluster has GPUs
(else one CPU each), retries a failed or lost one, and the driver joins the segments with
`concat` as they would be joined by hand. A task is the command line itself with `--shard K/N`,
run in the worker's process, so a worker renders exactly what `latentwalk ... --shard K/N` run
there would. Segments go beside the output (hidden names), so every worker must see the output's
folder (one machine, or a shared filesystem); a finished segment stays when another fails, and
the next run skips it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from latentwalk.errors import BadInput, LatentwalkError

# A failed task's retries: a lost worker or node (system failure), or a render that raised.
RETRIES = 2


def check_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BadInput("--ray needs Ray, which is not installed: pip install 'latentwalk[ray]'") from None


def segment_path(output: Path, k: int, n: int) -> Path:
    return output.with_name(f".{output.stem}.part{k}of{n}{output.suffix}")


def _run_shard(argv: list[str], threads: int | None) -> dict:
    """In a Ray worker: one shard, through the command's own parser, as its command line would."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from latentwalk.batch import cli_commands

    command = cli_commands()[argv[0]]
    code = command.main(args=argv[1:], prog_name="latentwalk", standalone_mode=False)
    if code == 2:  # bad input: the same on every try
        raise ValueError(f"latentwalk {argv[0]} --shard: bad input (exit 2)")
    if code:
        raise RuntimeError(f"latentwalk {argv[0]} --shard exited with {code}")
    return {"argv": argv}


def render(argv: list[str], output: Path, parts: int, render: str, address: str, workers: int, overwrite: bool, quiet: bool) -> dict:
    """Render `argv` (a walk's command line without output, shard or reporting options) in
    `parts` shards on Ray and join them at `output`. `render` is the whole render's id, which a
    leftover segment must have to be reused."""
    import ray

    from latentwalk import manifest
    from latentwalk.batch import with_options
    from latentwalk.concat import join
    from latentwalk.job import Job, render_id

    started = time.perf_counter()
    local = address == "local"
    say = (lambda line: None) if quiet else (lambda line: print(f"latentwalk: {line}", file=sys.stderr, flush=True))
    options = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=not quiet)
    try:
        if local:
            import torch

            gpus = torch.cuda.device_count()
            ray.init(**options, **({} if gpus else {"num_cpus": workers}))
        else:
            ray.init(address=address, **options)
    except Exception as e:  # noqa: BLE001 - no cluster at that address, a version mismatch: one line
        raise LatentwalkError(f"--ray {address}: cannot connect ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
    try:
        resources = ray.cluster_resources()
        gpu = resources.get("GPU", 0) > 0
        # On CPUs, each task gets its share of the cores (Ray gives a task one thread by default).
        threads = None if gpu else max(1, int(resources.get("CPU", 1)) // min(workers, parts))
        task = ray.remote(num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1, max_retries=RETRIES, retry_exceptions=[RuntimeError])(_run_shard)
        segments, pending = [], {}
        for k in range(1, parts + 1):
            segment = segment_path(output, k, parts)
            segments.append(segment)
            side = manifest.sidecar(segment)
            if segment.is_file() and side.is_file():
                try:
                    if render_id(Job.from_dict(manifest.read(side)["job"])) == render:
                        say(f"part {k}/{parts} is already rendered: {segment.name}")
                        continue
                except BadInput:
                    pass
            for stale in (segment, side):
                stale.unlink(missing_ok=True)
            shard_argv = with_options(argv, "--shard", f"{k}/{parts}", "--output", str(segment.resolve()), "--quiet", "--overwrite")
            pending[task.remote(shard_argv, threads)] = k
        say(f"{len(pending)} part{'s' if len(pending) != 1 else ''} on Ray ({'GPUs' if gpu else 'CPUs'}: {int(resources.get('GPU' if gpu else 'CPU', 0))})")
        done, failed = parts - len(pending), []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            k = pending.pop(ready[0])
            try:
                ray.get(ready[0])
                done += 1
                say(f"part {k}/{parts} done ({done}/{parts}, {time.perf_counter() - started:.0f}s)")
            except Exception as e:  # noqa: BLE001 - after its retries; the other parts go on
                failed.append(k)
                say(f"part {k}/{parts} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
        if failed:
            raise LatentwalkError(f"part{'s' if len(failed) > 1 else ''} {', '.join(map(str, sorted(failed)))} of {parts} failed on Ray "
                                  f"(after {RETRIES} retries); the finished parts are kept and a rerun renders only the rest")  # fmt: skip
    finally:
        ray.shutdown()  # a local cluster stops; from a remote one we disconnect (the next job connects again)
    summary = join(segments, output, overwrite)
    for segment in segments:
        segment.unlink(missing_ok=True)
        manifest.sidecar(segment).unlink(missing_ok=True)
    summary.update(command="ray", ray=address, workers=workers, seconds=round(time.perf_counter() - started, 3))
    summary.pop("segments", None)
    return summary


def to_argv(command: str, own: dict, flags: dict, lora: list) -> list[str]:
    """The walk's command line, from its parsed values (those not at their defaults; paths made
    absolute, so a worker in another folder finds them), without what the driver handles."""
    from latentwalk.batch import command_params
    from latentwalk.batch import to_argv as job_argv

    handled = {"output", "shard", "ray", "workers", "frames_dir", "keep_frames", "quiet", "json_out", "overwrite", "lora"}
    if str(flags.get("device") or "").startswith("cuda:"):
        flags = {**flags, "device": "cuda"}  # Ray gives each task one GPU, as cuda:0
    defaults = {"smooth": True, "crossfade": True}
    table: dict = {"command": command}
    for key, value in {**own, **flags}.items():
        if key in handled or value is None or (isinstance(value, bool) and value == defaults.get(key, False)):
            continue
        if isinstance(value, Path) or (key in ("model", "vae", "model_config", "preset") and Path(value).exists()):
            value = str(Path(value).resolve())
        table[key] = value
    if lora:  # as resolved: absolute paths with their scales
        table["lora"] = [f"{path}:{scale!r}" for path, scale in lora]
    entry = job_argv(0, table, command_params(), Path.cwd())
    if entry.error is not None:  # values the command line took: cannot happen
        raise LatentwalkError(f"--ray: cannot pass on the options ({entry.error})")
    return entry.argv
