"""Single-file checkpoints, as community fine-tunes ship them: tiny real pipelines written in the
original layout (tests/ldm.py), loaded offline through --model FILE."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import read_png
from ldm import to_single_file
from latentwalk.tiny import build_tiny_sdxl_pipeline

QUICK = ("--steps", "2", "--guidance", "4")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny SDXL as a diffusers folder and as one checkpoint of the same weights."""
    root = tmp_path_factory.mktemp("single")
    folder = root / "tiny-sdxl"
    build_tiny_sdxl_pipeline(seed=2).save_pretrained(folder)
    return folder, to_single_file(folder, root / "tiny-sdxl.safetensors")


def same_weights(a: np.ndarray, b: np.ndarray) -> None:
    """The same weights, loaded two ways: equal up to a level here and there. The weights are
    bit-identical (tests/ldm.py round-trips them); a memory-mapped folder and a converted file
    differ only in how their tensors are aligned, which moves a matrix product's last bit."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05


def fake_hub_cache(root: Path, repo: str, folder: Path) -> Path:
    """The hub cache's layout, holding `folder` as `repo`'s main revision."""
    cached = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, cached / "snapshots" / ("0" * 40))
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text("0" * 40)
    return root


def test_a_single_file_sdxl_loads_offline_and_draws_what_its_folder_draws(run, tmp_path, sdxl, monkeypatch):
    import huggingface_hub

    from latentwalk.catalog import single_file_family
    from latentwalk.job import resolve_settings

    folder, file = sdxl
    assert single_file_family(file) == "sdxl"
    run("generate", "a red circle", "--seeds", "3", "--model", folder, *QUICK, "-o", "folder.png")
    run("generate", "a red circle", "--seeds", "3", "--model", file, "--model-config", folder, *QUICK, "-o", "file.png")
    same_weights(read_png(tmp_path / "folder.png"), read_png(tmp_path / "file.png"))
    manifest = json.loads((tmp_path / "file.png.json").read_text())
    assert manifest["job"]["settings"]["model_config"] == str(folder.resolve())
    # The family's defaults come from the config's pipeline: SDXL's 30 steps, guidance 5.
    settings = resolve_settings(None, model=str(file), model_config=str(folder))
    assert (settings.steps, settings.guidance) == (30, 5.0)

    # Without --model-config: the family's base model's configs, from the hub cache (offline).
    hub = fake_hub_cache(tmp_path / "hub", "stabilityai/stable-diffusion-xl-base-1.0", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    walk = json.loads(run("seed-walk", "a red circle", "--seeds", "3,4", "--frames", "2", "--no-smooth", "--model", file, *QUICK,
                          "--frames-dir", "frames", "-o", "walk.mp4", "--json").stdout)  # fmt: skip
    assert walk["frames"] == 3
    # Keyframes still equal generate's images.
    assert np.array_equal(read_png(tmp_path / "frames" / "frame_000000.png"), read_png(tmp_path / "file.png"))
    again = json.loads(run("render", "walk.mp4.json", "-o", "again.mp4", "--json").stdout)
    assert again["frames"] == 3


def test_single_files_tell_their_family_by_their_keys_and_bad_ones_are_one_line(run, tmp_path, saved_model):
    from latentwalk.catalog import single_file_family

    file = to_single_file(saved_model, tmp_path / "sd.safetensors")
    assert single_file_family(file) == "sd1"
    run("generate", "a cat", "--seeds", "5", "--model", saved_model, *QUICK, "-o", "folder.png")
    run("generate", "a cat", "--seeds", "5", "--model", file, "--model-config", saved_model, *QUICK, "-o", "file.png")
    same_weights(read_png(tmp_path / "folder.png"), read_png(tmp_path / "file.png"))

    def error(*args) -> str:
        return run("generate", "a cat", *QUICK, *args, code=2).output

    save_file({"some.other.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    assert error("--model", "other.safetensors") == (
        "Error: --model 'other.safetensors': its keys name no family latentwalk knows; pass --family (sd1, sd2, sdxl, sd3, flux)\n"
    )
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    assert error("--model", "junk.safetensors").startswith("Error: --model 'junk.safetensors' is not a readable .safetensors file (")
    assert error("--model", file, "--family", "sd5") == "Error: --family must be one of sd1, sd2, sdxl, sd3, flux, got 'sd5'\n"
    assert error("--model", saved_model, "--family", "sd1") == (
        f"Error: --family is for a single-file --model; {str(saved_model)!r} names its own pipeline\n"
    )
    assert error("--model", file, "--model-config", "nowhere/at/all") == (
        "Error: --model-config 'nowhere/at/all': not a diffusers folder, nor a hub id like org/name\n"
    )
    assert error("--model", file, "--model-config", tmp_path) == (
        f"Error: --model-config {str(tmp_path)!r} is a folder but not a diffusers model (no model_index.json)\n"
    )
    # A hub model whose configs are neither cached nor reachable: one line that says what to do.
    failed = run("generate", "a cat", *QUICK, "--model", file, "--model-config", "nobody/nothing", code=1).output
    assert failed.startswith("Error: cannot load model ") and "pass --model-config with a diffusers folder" in failed
    assert failed.count("\n") == 1
