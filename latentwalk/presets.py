"""Presets: TOML files of default settings, chosen by name (shipped in presets/) or by path."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from latentwalk.errors import BadInput

# The keys a preset may set, with the types TOML must give them.
KEYS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "revision": (str,),
    "steps": (int,),
    "guidance": (int, float),
    "size": (str, int),
    "scheduler": (str,),
    "negative": (str,),
    "fps": (int, float),
    "frames": (int,),
    "crf": (int,),
    "batch_size": (int,),
    "ease": (str,),
    "device": (str,),
    "dtype": (str,),
    "long_prompts": (bool,),
}


def shipped() -> dict[str, Path]:
    """Name -> file of the presets shipped with latentwalk: the repository's presets/ folder in a
    checkout or editable install, the copy packaged as latentwalk._presets in a wheel."""
    folder = Path(__file__).resolve().parent.parent / "presets"
    entries = folder.iterdir() if folder.is_dir() else resources.files("latentwalk._presets").iterdir()
    return {Path(entry.name).stem: Path(str(entry)) for entry in entries if entry.name.endswith(".toml")}


def load_preset(name_or_path: str) -> dict:
    path = Path(name_or_path).expanduser()
    if not (name_or_path.endswith(".toml") or "/" in name_or_path):
        available = shipped()
        if name_or_path not in available:
            raise BadInput(f"unknown preset {name_or_path!r} (presets: {', '.join(sorted(available))}; or a path to a .toml file)")
        path = available[name_or_path]
    if not path.is_file():
        raise BadInput(f"preset file {str(path)!r} does not exist")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"preset {str(path)!r} is not valid TOML: {e}") from None
    for key, value in values.items():
        if key not in KEYS:
            raise BadInput(f"preset {str(path)!r}: unknown key {key!r} (keys: {', '.join(KEYS)})")
        if not isinstance(value, KEYS[key]) or (isinstance(value, bool) and bool not in KEYS[key]):
            raise BadInput(f"preset {str(path)!r}: {key} has the wrong type ({type(value).__name__})")
    return values
