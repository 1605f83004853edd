"""The CLI end to end, as a subprocess, on builtin:tiny: real videos read back and checked."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FAST, read_png, read_video
from latentwalk.job import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def assert_video_holds(video: np.ndarray, pngs: list[np.ndarray]) -> None:
    """Each decoded frame is nearest to its own PNG (content and order), up to codec loss:
    4:2:0 chroma costs about 13 levels on the tiny model's noise-like texture."""
    assert len(video) == len(pngs)
    for i, frame in enumerate(video):
        distances = [diff(frame, png) for png in pngs]
        assert int(np.argmin(distances)) == i and distances[i] < 18, (i, distances)


def test_generate_writes_one_png_per_seed_with_its_parameters(run, tmp_path):
    result = run("generate", "a medieval castle", "--seeds", "1,2", "-o", "out", *FAST, "--negative", "fog", "--json")
    summary = json.loads(result.stdout)
    assert summary["images"] == 2 and summary["width"] == 64
    paths = [tmp_path / "out" / f"a-medieval-castle-{seed}.png" for seed in (1, 2)]
    assert summary["outputs"] == [str(Path("out") / p.name) for p in paths]
    images = [Image.open(p) for p in paths]
    assert all(im.size == (64, 64) for im in images)
    text = images[0].text
    assert {k: text[k] for k in ("prompt", "negative_prompt", "seed", "model", "steps", "guidance", "width", "height")} == {
        "prompt": "a medieval castle", "negative_prompt": "fog", "seed": "1", "model": "builtin:tiny",
        "steps": "4", "guidance": "7.5", "width": "64", "height": "64",
    }  # fmt: skip
    assert text["scheduler"] == "DDIMScheduler" and text["latentwalk_version"]
    assert "Seed: 1, Size: 64x64" in text["parameters"]
    assert diff(read_png(paths[0]), read_png(paths[1])) > 5


def test_seed_walk_video_keyframes_equal_generate_and_frames_morph(run, tmp_path):
    run("generate", "a castle", "--seeds", "5,9", "-o", "stills", *FAST)
    result = run("seed-walk", "a castle", "--seeds", "5,9", "--frames", "4", "-o", "walk.mp4", "--frames-dir", "frames", *FAST, "--batch-size", "3", "--json")
    summary = json.loads(result.stdout)
    assert summary["frames"] == 5 and summary["output"] == "walk.mp4"
    assert set(summary["timings"]) >= {"load", "encode", "denoise", "decode", "write", "queue_wait"}
    assert summary["batch_size"] == 3
    video, meta = read_video(tmp_path / "walk.mp4")
    assert video.shape == (5, 64, 64, 3) and meta["fps"] == 12
    pngs = [read_png(tmp_path / "frames" / f"frame_{i:06d}.png") for i in range(5)]
    # Exactly the video's frames; the renders the walk also made live in a subfolder.
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:06d}.png" for i in range(5)] + ["job.json", "renders"]
    # The keyframe invariant: first and last frames are what generate draws for those seeds.
    for index, seed in ((0, 5), (4, 9)):
        still = read_png(tmp_path / "stills" / f"a-castle-{seed}.png")
        assert np.abs(pngs[index].astype(int) - still.astype(int)).max() <= 1
    assert_video_holds(video, pngs)
    # The picture moves at every step, and the middle is neither end.
    steps = [diff(pngs[i], pngs[i + 1]) for i in range(4)]
    assert min(steps) > 1, steps
    assert diff(pngs[2], pngs[0]) > 3 and diff(pngs[2], pngs[4]) > 3


def test_identical_runs_give_identical_frames(cli, tmp_path):
    for name in ("a", "b"):
        cli("seed-walk", "a castle", "--seeds", "1,2", "--frames", "2", "-o", f"{name}.mp4", "--frames-dir", name, *FAST, "-q")
    for i in range(3):
        assert np.array_equal(read_png(tmp_path / "a" / f"frame_{i:06d}.png"), read_png(tmp_path / "b" / f"frame_{i:06d}.png"))
    assert np.array_equal(read_video(tmp_path / "a.mp4")[0], read_video(tmp_path / "b.mp4")[0])


def test_engine_switches_through_the_cli(run, tmp_path):
    result = run("seed-walk", "a castle", "--seeds", "1,2", "--frames", "2", "-o", "e.mp4", *FAST,
                 "--channels-last", "--vae-slicing", "--vae-tiling", "--batch-size", "2", "--json", "-q")  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["frames"] == 3 and summary["batch_size"] == 2
    assert read_video(tmp_path / "e.mp4")[0].shape == (3, 64, 64, 3)


def test_seed_walk_loop_gif_by_duration(run, tmp_path):
    result = run("seed-walk", "a castle", "--seeds", "1,2,3", "--loop", "--duration", "1", "--fps", "10", "-o", "loop.gif", *FAST, "--ease", "ease-in-out")
    video, meta = read_video(tmp_path / "loop.gif")
    assert video.shape == (10, 64, 64, 3)
    assert "Wrote 'loop.gif': 10 frames" in result.stderr


PROMPTS = """\
# a story
a castle at dawn | seed=3 | frames=3

a castle at night | frames=2
a dragon over the castle | seed=4
"""


def test_prompt_walk_follows_the_file_and_passes_through_each_keyframe(run, tmp_path):
    (tmp_path / "story.txt").write_text(PROMPTS)
    run("prompt-walk", "story.txt", "-o", "story.webm", "--frames-dir", "frames", "--seed", "8", *FAST, "--quiet", "--no-smooth")
    video, meta = read_video(tmp_path / "story.webm")
    assert video.shape == (6, 64, 64, 3) and meta["codec"].startswith("vp9")
    run("generate", "a castle at night", "--seeds", "8", "-o", "night.png", *FAST, "-q")
    run("generate", "a dragon over the castle", "--seeds", "4", "-o", "dragon.png", *FAST, "-q")
    frames = [read_png(tmp_path / "frames" / f"frame_{i:06d}.png") for i in range(6)]
    assert np.abs(frames[3].astype(int) - read_png(tmp_path / "night.png")).max() <= 1
    assert np.abs(frames[5].astype(int) - read_png(tmp_path / "dragon.png")).max() <= 1
    assert_video_holds(video, frames)
    # The frame PNGs say where they are on the walk.
    text = Image.open(tmp_path / "frames" / "frame_000001.png").text
    assert (text["prompt"], text["to_prompt"], text["seed"], text["to_seed"]) == ("a castle at dawn", "a castle at night", "3", "8")
    assert float(text["t"]) == pytest.approx(1 / 3, abs=1e-6)


def test_prompt_walk_of_two_prompts_with_one_seed_changes_only_the_text(run, tmp_path):
    (tmp_path / "p.txt").write_text("a red circle\na blue square\n")
    run("prompt-walk", "p.txt", "--frames", "2", "--interp", "slerp", "--frames-dir", "f", *FAST, "-q")
    assert (tmp_path / "p.mp4").exists()  # default output: the prompts file's name
    frames = [read_png(tmp_path / "f" / f"frame_{i:06d}.png") for i in range(3)]
    assert diff(frames[0], frames[2]) > 1


def test_model_folder_saved_with_save_pretrained(run, tmp_path, saved_model):
    run("generate", "a castle", "--model", saved_model, "--steps", "4", "--size", "32x48", "-o", "x.png", "-q")
    assert Image.open(tmp_path / "x.png").size == (32, 48)
    assert Image.open(tmp_path / "x.png").text["model"] == str(saved_model)


def test_existing_output_is_only_replaced_with_overwrite(run, tmp_path):
    (tmp_path / "walk.mp4").write_bytes(b"my precious video")
    (tmp_path / "a-castle-1.png").write_bytes(b"my precious image")
    args = ["--seeds", "1,2", "--frames", "1", *FAST]
    result = run("seed-walk", "a castle", *args, "-o", "walk.mp4", code=2)
    assert result.stderr == "Error: output 'walk.mp4' exists; pass --overwrite to replace it\n"
    result = run("generate", "a castle", "--seeds", "1", *FAST, code=2)
    assert "exists; pass --overwrite" in result.stderr
    assert (tmp_path / "walk.mp4").read_bytes() == b"my precious video"
    assert (tmp_path / "a-castle-1.png").read_bytes() == b"my precious image"
    run("seed-walk", "a castle", *args, "-o", "walk.mp4", "--overwrite", "-q")
    assert read_video(tmp_path / "walk.mp4")[0].shape == (2, 64, 64, 3)


def test_not_a_terminal_means_plain_progress_lines_and_quiet_means_silence(cli):
    result = cli("seed-walk", "a castle", "--seeds", "1,2", "--frames", "4", "-o", "a.mp4", *FAST)
    lines = result.stderr.splitlines()
    # Even motion makes at most 25% more renders than frames: the bar counts renders.
    assert "latentwalk: seed-walk: at most 6 renders" in lines
    # The last line: all 6, or fewer once the frames are even.
    last = r"latentwalk: seed-walk: (6/6 renders, [\d.]+ renders/s, ETA 0s|[56] renders, done)"
    assert any(re.fullmatch(last, line) for line in lines), lines
    assert any(re.fullmatch(r"Wrote 'a.mp4': 5 frames from [56] renders, 64x64, .*", line) for line in lines)
    assert result.stdout == ""
    result = cli("seed-walk", "a castle", "--seeds", "1,2", "--frames", "2", "-o", "b.mp4", *FAST, "--quiet")
    assert result.stderr == "" and result.stdout == ""


# Each bad input: one line on stderr naming the problem, exit 2, no traceback, no file touched.
# These all fail before the model loads, so each costs a fraction of a second.
BAD_INPUTS = [
    (["prompt-walk", "missing.txt"], "prompts file 'missing.txt' does not exist"),
    (["prompt-walk", "empty.txt"], "empty.txt: no prompts in the file"),
    (["prompt-walk", "folder"], "prompts file 'folder' is a directory"),
    (["prompt-walk", "latin1.txt"], "prompts file 'latin1.txt' is not UTF-8 text"),
    (["prompt-walk", "binary.txt"], "prompts file 'binary.txt' is binary, not text"),
    (["prompt-walk", "bad.txt"], "bad.txt:2: expected key=value with key one of seed, frames, negative, at, image; got 'colour=red'"),
    (["prompt-walk", "one.txt"], "a walk needs at least two prompts, got 1"),
    (["seed-walk", "x", "--seeds", "1,a"], "--seeds: each seed must be a whole number"),
    (["seed-walk", "x", "--seeds", "3"], "a walk needs at least two seeds, got 1"),
    (["seed-walk", "x", "--seeds", "1,1"], "two neighbouring keyframes are identical"),
    (["seed-walk", "x", "--seeds", "1,2", "--frames", "0"], "--frames must be greater than 0"),
    (["seed-walk", "x", "--seeds", "1,2", "--frames", "-3"], "--frames must be greater than 0"),
    (["seed-walk", "x", "--seeds", "1,2", "--fps", "0"], "--fps must be greater than 0"),
    (["seed-walk", "x", "--seeds", "1,2", "--duration", "-1"], "--duration must be greater than 0"),
    (["seed-walk", "x", "--seeds", "1,2", "--duration", "2", "--frames", "3"], "give --frames (per segment) or --duration"),
    (["seed-walk", "x", "--seeds", "1,2", "-o", "x.avi"], "unknown video extension '.avi'"),
    (["seed-walk", "x", "--seeds", "1,2", "-o", "nodir/x.mp4"], "output directory 'nodir' does not exist"),
    (["seed-walk", "x", "--seeds", "1,2", "-o", "folder"], "output 'folder' is a directory"),
    (["seed-walk", "x", "--seeds", "1,2", "--interp", "cubic"], "--interp must be slerp or lerp"),
    (["seed-walk", "x", "--seeds", "1,2", "--ease", "bounce"], "--ease must be one of linear, ease-in-out"),
    (["generate", "x", "--size", "100x64"], "--size width must be a positive multiple of 8, got 100"),
    (["generate", "x", "--seeds", "1,2,1"], "--seeds lists 1 more than once"),
    (["generate", "x", "--steps", "0"], "--steps must be greater than 0"),
    (["generate", "   "], "the prompt is empty"),
    (["generate", "x", "--preset", "nope"], "unknown preset 'nope' (presets: flux-dev, flux-schnell, lcm, sd-turbo, sd15, sd3, sdxl, sdxl-turbo, shapes, tiny"),
    (["generate", "x", "--preset", "broken.toml"], "preset 'broken.toml' is not valid TOML"),
    (["generate", "x", "--preset", "typo.toml"], "preset 'typo.toml': unknown key 'stpes'"),
    (["generate", "x", "--model", "no/such/model"], "--model 'no/such/model': no such file or folder"),
    (["generate", "x", "--model", "builtin:nope"], "unknown builtin model 'builtin:nope' (builtins: builtin:tiny, builtin:shapes)"),
    (["generate", "x", "--model", "folder"], "--model 'folder' is a folder but not a diffusers model"),
    (["generate", "x", "--model", "weights.ckpt"], "--model 'weights.ckpt' is a pickle checkpoint"),
    (["generate", "x", "--device", "tpu"], "--device must be auto, cpu, cuda, cuda:N or mps"),
    (["generate", "x", "--model", "builtin:tiny", "--scheduler", "magic"], "--scheduler must be one of ddim, euler"),
    (["generate", "x", "--preset", "tiny", "--scheduler", "pndm", "--steps", "2"], "--steps must be at least 4 with the PNDM scheduler"),
    (["generate", "x", "--model", "weights.pt"], "--model 'weights.pt' is a pickle checkpoint, which can run arbitrary code when loaded"),
    (["generate", "x", "--model", "binmodel"], "--model 'binmodel' has pickle-only weights (unet/diffusion_pytorch_model.bin)"),
    (["generate", "x", "--seeds=-1,2"], "--seeds: each seed must be a whole number"),
    (["generate", "x", "--seeds", "99999999999999999999"], "must be at most 9223372036854775807"),
    (["seed-walk", "x", "--seeds", "1,2", "--frames", "5000000"], "--frames must be greater than 0 and at most 1e+06"),
    (["seed-walk", "x", "--seeds", "1,2", "--fps", "100000"], "--fps must be greater than 0 and at most 240"),
    (["seed-walk", "x", "--seeds", "1,2", "--duration", "1e9"], "--duration must be greater than 0 and at most 86400"),
    (["seed-walk", "x", "--seeds", "1,2", "-o", "/sys/x.mp4"], "output directory '/sys' is not writable"),
    (["seed-walk", "x", "--seeds", "1,2", "-o", "mine.mp4"], "output 'mine.mp4.json' exists; pass --overwrite"),
    (["seed-walk", "x", "--seeds", "1,2", "--frames-dir", "one.txt"], "--frames-dir 'one.txt' is a file"),
    (["seed-walk", "x", "--seeds", "1,2", "--frames-dir", "nodir/f"], "--frames-dir parent 'nodir' does not exist"),
    (["seed-walk", "x", "--seeds", "1,2", "--frames-dir", "/sys/f"], "--frames-dir '/sys' is not writable"),
    (["prompt-walk", "noprompt.txt"], "noprompt.txt:2: the line has options but no prompt"),
    (["prompt-walk", "twice.txt"], "twice.txt:1: frames= given twice"),
    (["prompt-walk", "zero.txt"], "zero.txt:1: frames must be a whole number from 1 to 1000000, got '0'"),
    (["render", "missing.json"], "manifest 'missing.json' does not exist"),
    (["render", "folder"], "manifest 'folder' is a directory"),
    (["render", "broken.toml"], "manifest 'broken.toml' is not valid JSON"),
    (["render", "other.json"], "'other.json' is not a latentwalk manifest"),
    (["render", "badplan.json"], "schedule entry 0 is out of range"),
    (["clean", "--older-than", "-1"], "--older-than must be 0 or more hours"),
]


@pytest.fixture(scope="module")
def bad_inputs_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.txt").write_text("# nothing\n\n")
    (folder / "folder").mkdir()
    (folder / "latin1.txt").write_bytes("ch\xe2teau".encode("latin-1"))
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02abc")
    (folder / "bad.txt").write_text("a castle\na tower | colour=red\n")
    (folder / "one.txt").write_text("a castle\n")
    (folder / "broken.toml").write_text("steps = [\n")
    (folder / "typo.toml").write_text("stpes = 4\n")
    (folder / "weights.ckpt").write_bytes(b"pickle")
    (folder / "weights.pt").write_bytes(b"pickle")
    (folder / "binmodel" / "unet").mkdir(parents=True)
    (folder / "binmodel" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (folder / "binmodel" / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    (folder / "mine.mp4.json").write_text("my notes")
    (folder / "noprompt.txt").write_text("a castle\n | seed=3\n")
    (folder / "twice.txt").write_text("a castle | frames=2 | frames=3\na tower\n")
    (folder / "zero.txt").write_text("a castle | frames=0\na tower\n")
    (folder / "other.json").write_text('{"prompt": "a castle"}')
    (folder / "badplan.json").write_text(json.dumps({
        "format": "latentwalk-manifest/1", "resolved": {}, "model": {}, "versions": {},
        "job": {"command": "seed-walk", "settings": dict(DEFAULTS, size=None), "engine": {},
                "keyframes": [{"prompt": "a", "seed": 1}], "plan": [[0, 0, 5, 0.0]], "loop": False,
                "noise_interp": "slerp", "cond_interp": "lerp"},
    }))  # fmt: skip
    return folder


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a)[:50] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(bad_inputs_dir, args, message, monkeypatch):
    from typer.testing import CliRunner

    from latentwalk.cli import app

    before = snapshot(bad_inputs_dir)
    monkeypatch.chdir(bad_inputs_dir)  # in process: a subprocess each would cost its imports, 55 times
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("Error: " + message) or message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert snapshot(bad_inputs_dir) == before


def test_a_model_that_fails_to_load_is_one_line_and_exit_1(tmp_path, cli):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    result = cli("generate", "x", "--model", "corrupt", check_ok=False)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot load model 'corrupt': ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.png"))


def test_version_and_help(cli):
    assert cli("--version").stdout.strip().startswith("latentwalk 0.")
    for command in ("generate", "seed-walk", "prompt-walk", "render", "clean"):
        assert "Usage: latentwalk " + command in cli(command, "--help").stdout


def test_readme_help_blocks_are_the_current_help():
    """The README is the manual: its --help blocks are what the CLI prints now."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_help

    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!-- help: ") == 6
    assert readme_help.render(readme) == readme, "README help is stale: run python scripts/readme_help.py"


def test_readme_presets_table_is_what_the_shipped_presets_set():
    from latentwalk.presets import load_preset, shipped

    readme = (ROOT / "README.md").read_text()
    header = "| preset | model | size | steps | guidance | scheduler | fps | frames | batch |"
    rows = readme.split(header)[1].split("\n\n")[0].strip().splitlines()[1:]
    table = {}
    for row in rows:
        name, model, *values = [cell.strip() for cell in row.strip("|").split("|")]
        table[name.strip("`")] = [model.split("`")[1], *values]
    assert set(table) == set(shipped())
    for name in shipped():
        preset = load_preset(name)
        numbers = [f"{preset[key]:g}" for key in ("steps", "guidance")]
        expected = [preset["model"], preset["size"], *numbers, preset["scheduler"], f"{preset['fps']:g}", str(preset["frames"])]
        assert table[name] == [*expected, str(preset.get("batch_size", "auto"))], name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.endswith("-m pytest"))
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_pickle_weights_load_only_with_allow_pickle(run, tmp_path):
    from latentwalk.tiny import build_tiny_pipeline

    build_tiny_pipeline(seed=1).save_pretrained(tmp_path / "m", safe_serialization=False)
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.bin").exists()
    result = run("generate", "x", "--model", "m", "--steps", "2", "-o", "a.png", code=2)
    assert "pass --allow-pickle if you trust the source" in result.stderr
    assert not (tmp_path / "a.png").exists()
    run("generate", "x", "--model", "m", "--steps", "2", "-o", "a.png", "--allow-pickle", "-q")
    assert read_png(tmp_path / "a.png").shape == (64, 64, 3)


def test_a_prompt_past_the_token_limit_warns_with_the_dropped_words(run):
    prompt = "a castle on a hill " * 8 + "with a red dragon"
    result = run("generate", prompt, *FAST, "-o", "long.png")
    warning = next(line for line in result.stderr.splitlines() if "tokens" in line)
    assert warning.startswith("Warning: prompt is longer than the CLIP text encoder's 77 tokens; dropped: ")
    assert warning.endswith("with a red dragon'; --long-prompts reads it all")


def test_out_of_memory_is_exit_3_with_a_hint(tmp_path, monkeypatch):
    """In process, so the backend can run out of memory on demand (the real one would need GBs)."""
    import torch
    from typer.testing import CliRunner

    from latentwalk.cli import app
    from latentwalk.families.common import Rows

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Rows, "call", out_of_memory)  # every model call of a render
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["seed-walk", "x", "--seeds", "1,2", "--frames", "2", *FAST, "-o", "w.mp4", "-q"])
    assert result.exit_code == 3
    assert result.output.startswith("Error: out of memory: try a smaller --batch-size, --vae-slicing or --vae-tiling")
    assert not (tmp_path / "w.mp4").exists()


def test_a_model_with_corrupt_weights_is_one_line_and_exit_1(cli, tmp_path, saved_model):
    import shutil

    shutil.copytree(saved_model, tmp_path / "m")
    weights = tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = cli("generate", "x", "--model", "m", "-o", "x.png", check_ok=False)
    assert result.returncode == 1 and result.stderr.startswith("Error: cannot load model 'm': ")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "x.png").exists()


def test_an_unwritable_cache_is_one_line(cli):
    result = cli("generate", "x", *FAST, "-o", "x.png", check_ok=False, env={"LATENTWALK_CACHE": "/sys/latentwalk"})
    assert result.returncode == 2
    assert result.stderr.startswith("Error: cannot create work directory '/sys/latentwalk/work/")
    assert result.stderr.endswith("set LATENTWALK_CACHE to a writable folder\n")


def test_a_hub_model_loads_from_the_hub_cache_and_its_commit_is_in_the_manifest(cli, tmp_path, saved_model):
    """The hub path users take, offline: a hub cache laid out as huggingface_hub writes it."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-sd"
    shutil.copytree(saved_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    cli("generate", "a castle", "--model", "someone/tiny-sd", "--steps", "2", "-o", "hub.png", "-q", env=env)
    cli("generate", "a castle", "--model", str(saved_model), "--steps", "2", "-o", "folder.png", "-q")
    assert np.array_equal(read_png(tmp_path / "hub.png"), read_png(tmp_path / "folder.png"))
    model = json.loads((tmp_path / "hub.png.json").read_text())["model"]
    assert model == {"id": "someone/tiny-sd", "kind": "hub", "revision": commit}
    cli("render", "hub.png.json", "-o", "again.png", "-q", env=env)
    assert np.array_equal(read_png(tmp_path / "again.png"), read_png(tmp_path / "hub.png"))
