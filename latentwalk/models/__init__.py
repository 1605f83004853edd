"""Builtin models that ship as diffusers folders inside the package.

`builtin:shapes` (shapes/) is trained by scripts/train_shapes.py and scored by
scripts/eval_shapes.py; it loads through the same from_pretrained path as any local folder.
"""

from __future__ import annotations

from pathlib import Path

FOLDERS = {"builtin:shapes": "shapes"}


def folder(model: str) -> Path:
    return Path(__file__).resolve().parent / FOLDERS[model]
