import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Small and quick: the tiny preset at 4 steps. Enough to exercise every code path.
FAST = ["--preset", "tiny", "--steps", "4"]


def run_cli(*args, cwd: Path, check_ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as users and cron jobs do."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env.pop("LATENTWALK_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "latentwalk", *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if check_ok and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def read_video(path: Path) -> tuple[np.ndarray, dict]:
    """Decode every frame with the bundled ffmpeg: ([N, H, W, 3] uint8, metadata)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
    return np.stack(frames), meta


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Work directories and hash caches of the tests' runs stay out of the user's ~/.cache."""
    os.environ["LATENTWALK_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def run(tmp_path, monkeypatch):
    """The CLI in process (typer's CliRunner) in a fresh folder: run(*args, code=0) -> result."""
    from typer.testing import CliRunner

    from latentwalk.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LATENTWALK_DEBUG", raising=False)

    def invoke(*args, code=0):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == code, (result.exit_code, result.output)
        return result

    return invoke


@pytest.fixture
def cli(tmp_path):
    def run(*args, **kwargs):
        return run_cli(*args, cwd=tmp_path, **kwargs)

    return run


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory) -> Path:
    """A random pipeline of the real diffusers classes, saved the way users' models are."""
    from latentwalk.tiny import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("models") / "tiny-sd"
    build_tiny_pipeline(seed=1).save_pretrained(folder)
    return folder
