"""Studio jobs: a `batch` job table (as JSON) checked, made a command line, and run.

A job is checked by running its command line up to the render (every check the CLI makes,
none of the work): a bad job is refused with the CLI's own one line before it is queued. One
worker thread runs the queue, one job at a time, through the same command line, so a job's
`command` run by hand makes the same frames. The loaded model stays for the next job that uses
it (runner.LOADED); a job that fails is recorded and the worker goes on.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwalk.batch import cli_commands, command_params, to_argv, with_options
from latentwalk.errors import BadInput, Cancelled
from latentwalk.studio.store import Store

# An output's name: a plain file name inside --outputs (no folders, not hidden).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,120}")
UPLOADED = re.compile(r"upload-[0-9a-f]{12}\.[a-z0-9]{2,5}")  # the names POST /api/uploads gives
EXTENSIONS = {"generate": (".png",), "seed-walk": (".mp4", ".webm", ".gif"), "prompt-walk": (".mp4", ".webm", ".gif")}
# Options that would reach outside --outputs or change how the server runs.
REFUSED = ("frames_dir", "keep_frames", "ray", "workers", "shard", "json_out", "quiet", "allow_pickle", "model_config", "vae", "lora")


@dataclass
class Prepared:
    table: dict  # as stored (a prompt walk's text made its prompts file)
    argv: list[str]  # to run, in the outputs folder
    command: list[str]  # to show: the same, run from the outputs folder
    outputs: list[str]  # names inside the outputs folder
    plan: dict  # what it will make: plan_of()


def prepare(table: dict, outputs: Path, job_id: str, keep: bool = True) -> Prepared:
    """A submitted job checked as its command line checks it; BadInput if it is not one. A
    prompt walk's `prompts` text becomes its prompts file beside the outputs (removed again
    when the job is refused, or when only checked: `keep=False`)."""
    from latentwalk.batch import COMMANDS

    if not isinstance(table, dict):
        raise BadInput("a job is a JSON object, as one [[job]] table of a batch file")
    table = dict(table)
    command = table.get("command")
    if command not in COMMANDS:
        raise BadInput(f"command must be one of {', '.join(COMMANDS)}, got {command!r}")
    for key in REFUSED:
        if key in table:
            raise BadInput(f"{key} is not available through the server")
    for key in ("audio", "prompts_file", "preset", "model"):
        if key not in table:
            continue
        value = table[key]
        if not isinstance(value, str):  # a number would be taken as a path relative to the server
            raise BadInput(f"{key} must be a string, got {value!r}")
        if key == "audio" and not UPLOADED.fullmatch(value):
            raise BadInput(f"audio must be the name of an uploaded file (POST /api/uploads), got {value!r}")
        if key == "prompts_file" and not NAME.fullmatch(value):
            raise BadInput(f"prompts_file must be a file name inside the outputs folder, got {value!r}")
        if key == "preset" and ("/" in value or value.endswith(".toml")):
            raise BadInput("preset must be a preset's name")
        if key == "model" and (value.startswith((".", "/", "~")) or "\\" in value or ".." in value):
            raise BadInput("model must be a hub id or a builtin model, not a path")
    written = None
    if command == "prompt-walk" and "prompts" in table:
        text = table.pop("prompts")
        if not isinstance(text, str) or not text.strip():
            raise BadInput("prompts must be the prompts file's text")
        table["prompts_file"] = f"{job_id}.prompts.txt"
        written = (outputs / table["prompts_file"], text)
        check_pictures(text)
    elif command == "prompt-walk" and (outputs / str(table.get("prompts_file", ""))).is_file():
        named = outputs / table["prompts_file"]
        if named.stat().st_size > 1_000_000:
            raise BadInput("prompts_file must be a prompts file (under 1 MB)")
        check_pictures(named.read_bytes().decode("utf-8-sig", errors="replace"))
    output = table.setdefault("output", f"{job_id}{EXTENSIONS[command][0]}")
    if not isinstance(output, str) or not NAME.fullmatch(output) or Path(output).suffix.lower() not in EXTENSIONS[command]:
        raise BadInput(f"output must be a file name ({', '.join(EXTENSIONS[command])}) inside the outputs folder, got {output!r}")
    if written is not None:
        written[0].write_text(written[1], encoding="utf-8")
    try:
        params = command_params()
        entry = to_argv(0, table, params, outputs)
        if entry.error is not None:
            raise BadInput(entry.error)
        shown = to_argv(0, table, params, Path("."))  # as run from the outputs folder
        names = [output]
        if command == "generate":
            from latentwalk.schedule import parse_seeds

            seeds = parse_seeds(str(table.get("seeds", "0")))
            if len(seeds) > 1:
                names = [f"{Path(output).stem}-{seed}.png" for seed in seeds]
        job, warnings = check(entry.argv, cli_commands())
        for k in job.keyframes if job is not None else []:  # and as the command read them: uploads only
            if k.image is not None and (Path(k.image).parent != outputs.resolve() or not UPLOADED.fullmatch(Path(k.image).name)):
                raise BadInput(f"line {k.line}: image= must be the name of an uploaded picture (POST /api/uploads)")
    except BaseException:
        if written is not None:
            written[0].unlink(missing_ok=True)  # a refused job leaves nothing
        raise
    if written is not None and not keep:
        written[0].unlink(missing_ok=True)
    return Prepared(table, entry.argv, ["latentwalk", *shown.argv], names, plan_of(job, warnings))


def check_pictures(text: str) -> None:
    """A prompts file's pictures (image=) must be uploads: a path would show the server's
    pictures, from anywhere it can read, in a video."""
    from latentwalk.schedule import parse_prompts

    # As the command reads its file (a byte-order mark is not part of the first line).
    for k in parse_prompts(text.removeprefix("\ufeff"), 0):
        if k.image is not None and not UPLOADED.fullmatch(k.image):
            raise BadInput(f"line {k.line}: image= must be the name of an uploaded picture (POST /api/uploads), got {k.image!r}")


def plan_of(job, warnings: list[str]) -> dict:
    """What a checked job will make: its frames, and for a walk where each keyframe falls (in
    seconds, as the walk places them: lengths, at= times, the music's beats)."""
    if job is None:
        return {"warnings": warnings}
    fps = job.settings.fps
    plan = {"command": job.command, "frames": job.frame_count, "fps": fps, "warnings": warnings}
    if job.command != "generate":
        anchors = np.concatenate([[0], np.cumsum(job.lengths)])
        plan["keyframes"] = [round(float(a) / fps, 4) for a in anchors[: len(job.keyframes)]]
        plan["seconds"] = round(job.frame_count / fps, 4)
        if job.loop:
            plan["loop_end"] = round(float(anchors[-1]) / fps, 4)
    return plan


def check(argv: list[str], commands: dict) -> tuple:
    """Every check the command line makes, none of its work: the job it would render (None
    where the command never reached one) and the warnings, or its one line as BadInput."""
    from latentwalk import cli, runner

    cli.RESULT.error, cli.RESULT.silent, cli.RESULT.warnings = None, True, []  # back to the caller, not to the server's log
    runner.LOCAL.check_only = True
    try:
        code = commands[argv[0]].main(args=with_options(argv, "--quiet")[1:], prog_name="latentwalk", standalone_mode=False)
    except runner.CheckedOnly as e:
        return e.job, list(cli.RESULT.warnings)
    except Exception as e:  # noqa: BLE001 - the parser's own errors (typer's click exceptions)
        raise BadInput(e.format_message() if hasattr(e, "format_message") else str(e)) from None
    finally:
        runner.LOCAL.check_only = cli.RESULT.silent = False
    if code:
        raise BadInput(cli.RESULT.error or f"exit {code}")
    return None, list(cli.RESULT.warnings)


class Worker:
    """Runs the queue, one job at a time, in one thread."""

    def __init__(self, store: Store, outputs: Path):
        self.store, self.outputs = store, outputs
        self.wake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="latentwalk-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the current batch of renders (a running job stays running in the store:
        the next start queues it again, to resume) and wait for the thread: a process must not
        exit while it is inside torch."""
        self.stopping = True
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _loop(self) -> None:
        from latentwalk import runner

        runner.LOADED = {}  # the model stays loaded between jobs that use it
        while not self.stopping:
            job = self.store.next_queued()
            if job is None:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            self.run(job)

    def run(self, job: dict) -> None:
        from latentwalk import cli, runner

        job_id = job["id"]
        latest = self.outputs / ".studio" / f"{job_id}.latest.png"
        shown = [0.0]

        def stop_here() -> None:  # a cancel (or the server stopping) ends the run here
            if self.stopping or self.store.get(job_id)["state"] == "cancelled":
                raise Cancelled()

        def tick(done: int, most: int) -> None:  # after every batch of renders
            stop_here()
            self.store.update(job_id, renders_done=done, renders_most=most)

        def watch(done: int, total: int, image: np.ndarray) -> None:
            stop_here()
            if time.monotonic() - shown[0] > 1.0 or done == total:  # the latest frame, once a second
                shown[0] = time.monotonic()
                _write_png(latest, image)  # before the progress that announces it
            self.store.update(job_id, frames_done=done, frames_total=total)

        argv = _argv(job, self.outputs)
        cli.RESULT.error = cli.RESULT.summary = None
        runner.LOCAL.watch, runner.LOCAL.tick = watch, tick
        try:
            args = with_options(argv, "--quiet")[1:]  # no --overwrite: a file that appeared meanwhile stays
            code = cli_commands()[argv[0]].main(args=args, prog_name="latentwalk", standalone_mode=False)
        except Cancelled:
            return  # already marked; its renders stay in the work directory, to resume
        except BaseException as e:  # noqa: BLE001 - a failing job never takes the server down
            self.store.update(job_id, state="failed", error=f"{type(e).__name__}: {e}")
            return
        finally:
            runner.LOCAL.watch = runner.LOCAL.tick = None
        if code:
            self.store.update(job_id, state="failed", error=cli.RESULT.error or f"exit {code}")
        else:
            self.store.update(job_id, state="done")


def _argv(job: dict, outputs: Path) -> list[str]:
    """A stored job's argv: its table made a command line again, in the outputs folder."""
    return to_argv(0, job["table"], command_params(), outputs).argv


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    tmp.replace(path)
