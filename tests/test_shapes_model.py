"""builtin:shapes, the trained model shipped in the package: it draws what it is asked, on
captions it never saw in training, and a walk between two scenes changes each attribute once."""

import json

import numpy as np
import pytest
import torch

from conftest import read_png, read_video
from latentwalk import models, shapes
from latentwalk.backend import Backend, load_pipeline


@pytest.fixture(scope="module")
def backend():
    pipe = load_pipeline("builtin:shapes", torch.float32)
    return Backend(pipe, "builtin:shapes", torch.device("cpu"), torch.float32)


def test_it_ships_as_a_safetensors_diffusers_folder_within_the_size_budget():
    folder = models.folder("builtin:shapes")
    files = [p for p in folder.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert (folder / "model_index.json").is_file() and len(weights) == 3
    assert not [p for p in files if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20


def test_it_draws_held_out_captions_as_asked(backend):
    held = shapes.held_out()
    cond = [backend.conditioning(scene.caption, "") for scene in held]
    cond = {name: torch.cat([c[name] for c in cond]) for name in cond[0]}
    noise = torch.cat([backend.noise(seed, shapes.SIZE, shapes.SIZE) for seed in range(len(held))])
    images = backend.render(noise, cond, 20, 5.0)
    result = shapes.score(list(zip(held, images)))
    # Measured 16/17 on every attribute and all four (the small green triangle on gray comes out
    # round; README, builtin:shapes); one image of margin for float rounding on other CPUs.
    assert result["all"] >= 13 / 17, result  # the 75% bar
    assert min(result[name] for name in ("size", "colour", "shape", "background")) >= 15 / 17, result


def test_generate_draws_an_unseen_caption_and_its_manifest_pins_the_weights(cli, tmp_path):
    scene = shapes.held_out()[5]
    result = cli("generate", scene.caption, "--preset", "shapes", "--seeds", "3", "-o", "out.png", "-q")
    assert shapes.classify(read_png(tmp_path / "out.png")) == scene and result.stderr == ""
    manifest = json.loads((tmp_path / "out.png.json").read_text())
    assert manifest["model"]["id"] == "builtin:shapes" and len(manifest["model"]["sha256"]) == 64
    cli("render", "out.png.json", "-o", "again.png", "-q")
    assert np.array_equal(read_png(tmp_path / "again.png"), read_png(tmp_path / "out.png"))
    manifest["model"]["sha256"] = "0" * 64  # as if made by a release with other weights
    (tmp_path / "other.json").write_text(json.dumps(manifest))
    result = cli("render", "other.json", "-o", "other.png", check_ok=False)
    assert result.returncode == 2 and not (tmp_path / "other.png").exists()
    assert result.stderr.startswith("Error: builtin:shapes has changed since the manifest was written")


def test_words_it_never_saw_are_named_in_a_warning(cli, tmp_path):
    result = cli("generate", "a large orange cat", "--preset", "shapes", "--steps", "2", "-o", "cat.png", "-q")
    assert (tmp_path / "cat.png").is_file()
    assert result.stderr == (
        "Warning: builtin:shapes never saw the words 'orange', 'cat'; "
        "it knows captions like 'a large red circle on a blue background'\n"
    )


def test_a_prompt_walk_changes_colour_and_shape_once_without_returning(cli, tmp_path):
    start, end = shapes.Scene("large", "red", "circle", "blue"), shapes.Scene("large", "yellow", "square", "blue")
    (tmp_path / "walk.txt").write_text(f"{start.caption} | seed=4\n{end.caption} | seed=4\n")
    summary = json.loads(cli("prompt-walk", "walk.txt", "--preset", "shapes", "--frames", "16", "-o", "walk.mp4", "-q", "--json").stdout)
    frames, meta = read_video(tmp_path / "walk.mp4")
    assert len(frames) == summary["frames"] and meta["size"] == (64, 64)
    seen = [shapes.classify(frame) for frame in frames]
    assert None not in seen
    assert seen[0] == start and seen[-1] == end
    for attribute in ("colour", "shape"):
        values = [getattr(scene, attribute) for scene in seen]
        changes = [i for i in range(1, len(values)) if values[i] != values[i - 1]]
        assert len(changes) == 1, f"{attribute}: {values}"
    assert {(s.size, s.background) for s in seen} == {("large", "blue")}
