"""Sidecar manifests, and `latentwalk render` making the same frames again from one."""

import json
from pathlib import Path

import numpy as np

from conftest import FAST, read_png, read_video

WALK = ["seed-walk", "a castle", "--seeds", "3,4", "--frames", "3", *FAST, "-q", "--no-smooth"]


def test_a_walk_manifest_holds_everything_and_renders_the_same_frames(cli, tmp_path):
    cli(*WALK, "-o", "walk.mp4", "--frames-dir", "a", "--guidance", "6", "--ease", "ease-in-out")
    manifest = json.loads((tmp_path / "walk.mp4.json").read_text())
    assert manifest["format"] == "latentwalk-manifest/1" and manifest["output"] == "walk.mp4"
    job = manifest["job"]
    assert job["command"] == "seed-walk" and job["settings"]["guidance"] == 6 and job["settings"]["ease"] == "ease-in-out"
    assert [k["seed"] for k in job["keyframes"]] == [3, 4] and job["noise_interp"] == "slerp"
    assert len(job["plan"]) == 4 and job["plan"][1][:3] == [1, 0, 1] and 0 < job["plan"][1][3] < 1 / 3
    assert manifest["resolved"] == {**manifest["resolved"], "width": 64, "height": 64, "batch_size": 1, "dtype": "float32", "device": "cpu", "scheduler": "DDIMScheduler"}
    assert manifest["model"] == {"id": "builtin:tiny", "kind": "builtin"}
    assert {"latentwalk", "torch", "diffusers", "transformers"} <= set(manifest["versions"])
    assert manifest["timings"]["denoise"] > 0

    result = cli("render", "walk.mp4.json", "-o", "again.mp4", "--frames-dir", "b", "--json")
    summary = json.loads(result.stdout)
    assert summary["frames"] == 4 and summary["output"] == "again.mp4"
    for i in range(4):
        assert np.array_equal(read_png(tmp_path / "a" / f"frame_{i:06d}.png"), read_png(tmp_path / "b" / f"frame_{i:06d}.png"))
    assert np.array_equal(read_video(tmp_path / "walk.mp4")[0], read_video(tmp_path / "again.mp4")[0])
    # The re-render has its own manifest: the same job, with what was resolved now pinned.
    again = json.loads((tmp_path / "again.mp4.json").read_text())["job"]
    pinned = {"size": [64, 64], "batch_size": 1, "dtype": "float32", "device": "cpu"}
    assert again == {**job, "settings": {**job["settings"], **pinned}}
    # By default render writes beside the manifest, under the name it describes: never over it.
    result = cli("render", "walk.mp4.json", check_ok=False)
    assert result.returncode == 2 and result.stderr == "Error: output 'walk.mp4' exists; pass --overwrite to replace it\n"


def test_an_image_manifest_renders_that_image_in_its_batch(cli, tmp_path):
    cli("generate", "a castle", "--seeds", "1,2,3", "--batch-size", "2", "-o", "out", *FAST, "-q")
    manifest = json.loads((tmp_path / "out" / "a-castle-2.png.json").read_text())
    assert manifest["index"] == 1 and manifest["output"] == "a-castle-2.png"
    cli("render", "out/a-castle-2.png.json", "-o", "again.png", "-q")
    assert np.array_equal(read_png(tmp_path / "again.png"), read_png(tmp_path / "out" / "a-castle-2.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.png", "again.png.json", "out"]


def test_a_local_model_is_pinned_by_content(cli, tmp_path, saved_model):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(saved_model, model)
    cli("generate", "a castle", "--model", "model", "--steps", "2", "-o", "x.png", "-q")
    identity = json.loads((tmp_path / "x.png.json").read_text())["model"]
    assert identity["kind"] == "folder" and identity["path"] == str(model) and len(identity["sha256"]) == 64
    cli("render", "x.png.json", "-o", "y.png", "-q")
    assert np.array_equal(read_png(tmp_path / "x.png"), read_png(tmp_path / "y.png"))
    config = model / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"steps_offset": 1', '"steps_offset": 0'))
    result = cli("render", "x.png.json", "-o", "z.png", check_ok=False)
    assert result.returncode == 2
    assert result.stderr == "Error: model 'model' has changed since the manifest was written (its sha256 differs)\n"
    assert not Path(tmp_path / "z.png").exists()
