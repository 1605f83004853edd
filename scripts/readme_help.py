"""Rewrite the --help blocks in README.md from the CLI itself (tests check they match).

    python scripts/readme_help.py
"""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- help: (?P<command>[\w-]*) -->\n```text\n)(?P<text>.*?)(```\n)", re.S)


def help_text(command: str) -> str:
    args = [command, "--help"] if command else ["--help"]
    env = {**os.environ, "COLUMNS": "100", "TERMINAL_WIDTH": "100", "TYPER_USE_RICH": "0"}
    result = subprocess.run([sys.executable, "-m", "latentwalk", *args], capture_output=True, text=True, env=env, check=True)
    return result.stdout


def render(readme: str) -> str:
    return BLOCK.sub(lambda m: m[1] + help_text(m["command"]) + m[4], readme)


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
