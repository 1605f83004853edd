"""A job file: a list of renders for `latentwalk batch`, as the command lines they stand for.

Each `[[job]]` table names a `command` (generate, seed-walk or prompt-walk), its argument
(`prompt`, or `prompts_file` for prompt-walk) and any of the command's options by long name
with underscores (`seeds = "1,2,3"`, `frames = 48`, `smooth = false`, `lora = ["a.safetensors"]`).
A job becomes the argv of its command, so it is checked and run exactly as the command line
would be: one parser, one set of checks, no second way in. Relative paths are taken from the
job file's folder, so a cron entry runs the same file from anywhere.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from latentwalk.errors import BadInput

COMMANDS = {"generate": "prompt", "seed-walk": "prompt", "prompt-walk": "prompts_file"}
# Batch-level: a job cannot set how the batch reports.
RESERVED = ("json_out", "quiet")


@dataclass
class Entry:
    """One job of the file: its argv (for the command), or why it cannot run."""

    number: int  # from 1, in file order
    command: str
    argv: list[str] = field(default_factory=list)
    error: str | None = None
    outputs: list[Path] = field(default_factory=list)


def read_jobs(path: Path) -> list[dict]:
    """The file's [[job]] tables; a file that is not one is one line."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"job file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read job file {str(path)!r}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"job file {str(path)!r} is not valid TOML: {e}") from None
    jobs = data.get("job")
    unknown = sorted(set(data) - {"job"})
    if unknown:
        raise BadInput(f"job file {str(path)!r}: unknown top-level key {unknown[0]!r}; jobs are [[job]] tables")
    if not isinstance(jobs, list) or not jobs or not all(isinstance(j, dict) for j in jobs):
        raise BadInput(f"job file {str(path)!r} has no [[job]] tables")
    return jobs


def cli_commands() -> dict:
    """The CLI's commands (click objects), whose parameters say what a job may set."""
    import typer.main

    from latentwalk.cli import app

    return typer.main.get_command(app).commands


def command_params() -> dict[str, dict]:
    """Per job command, its parameters by name (click metadata): what to_argv takes."""
    commands = cli_commands()
    return {name: {p.name: p for p in commands[name].params} for name in COMMANDS}


def to_argv(number: int, job: dict, params: dict[str, dict], base: Path) -> Entry:
    """A job table as its command's argv. `params` is, per command, each parameter's click
    metadata (name -> click.Parameter), read from the CLI itself."""
    command = job.get("command")
    entry = Entry(number, str(command))
    if command not in COMMANDS:
        entry.error = f"command must be one of {', '.join(COMMANDS)}, got {command!r}"
        return entry
    known = params[command]
    argument = COMMANDS[command]
    argv, positional = [command], None
    for key, value in job.items():
        if key == "command":
            continue
        if key not in known or key in RESERVED:
            hint = " (use --json or --quiet on batch itself)" if key in RESERVED else ""
            entry.error = f"unknown key {key!r} for {command}{hint}"
            return entry
        param = known[key]
        if key == argument:
            if not isinstance(value, str):
                entry.error = f"{key} must be a string"
                return entry
            positional = _path(key, value, base)
            continue
        try:
            argv += _option(param, key, value, base)
        except ValueError as e:
            entry.error = str(e)
            return entry
    if positional is None:
        entry.error = f"{command} needs {argument}"
        return entry
    # The argument goes last, after "--": a prompt that starts with "-" is still a prompt.
    entry.argv = [*argv, "--", positional]
    return entry


def with_options(argv: list[str], *options: str) -> list[str]:
    """A job's argv with more options, before the `--` that ends them."""
    cut = argv.index("--")
    return [*argv[:cut], *options, *argv[cut:]]


# Options that name files: relative ones are the job file's folder's. Outputs always; inputs
# where such a file exists there (else the value is a hub id, a builtin or a preset's name).
OUTPUTS = ("output", "frames_dir")
INPUTS = ("prompts_file", "audio", "model", "vae", "lora", "model_config", "preset")


def _path(key: str, value: str, base: Path) -> str:
    if key not in OUTPUTS and key not in INPUTS:
        return value
    scale = ""
    if key == "lora":  # PATH[:SCALE]
        head, sep, tail = value.rpartition(":")
        if sep and head and tail.replace(".", "", 1).lstrip("-").isdigit():
            value, scale = head, sep + tail
    path = Path(value).expanduser()
    if path.is_absolute() or value.startswith("builtin:"):
        return str(path) + scale if not value.startswith("builtin:") else value
    if key in OUTPUTS or (base / path).exists():
        return str(base / path) + scale
    return value + scale


def _option(param, key: str, value, base: Path) -> list[str]:
    name = param.opts[0]
    if getattr(param, "is_flag", False):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        if value:
            return [name]
        return [param.secondary_opts[0]] if param.secondary_opts else []
    values = value if param.multiple and isinstance(value, list) else [value]
    out = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ValueError(f"{key} must be a {'list of ' if param.multiple else ''}string or number, got {item!r}")
        out += [name, _path(key, item, base) if isinstance(item, str) else str(item)]
    return out
