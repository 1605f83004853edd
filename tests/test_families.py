"""Model families and samplers, on tiny random pipelines of the real diffusers classes: our loop
equals each pipeline's own, and walks keep their invariants whatever the family and sampler."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST, read_png
from latentwalk.backend import Backend, load_pipeline
from latentwalk.errors import BadInput
from latentwalk.render import RenderSpec, render_frames
from latentwalk.schedule import Keyframe, plan_stills, plan_walk
from latentwalk.schedulers import SAMPLERS, names_for
from latentwalk.tiny import build_tiny_sdxl_pipeline

CPU = torch.device("cpu")


def as_uint8(images: np.ndarray) -> np.ndarray:
    return (images * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    build_tiny_sdxl_pipeline(seed=2).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("negative", ["blurry", ""])
def test_sdxl_renders_what_its_pipeline_renders(negative):
    pipe = build_tiny_sdxl_pipeline()
    backend = Backend(pipe, "mem", CPU, torch.float32)
    ours = backend.render(backend.noise(3, 64, 64), backend.conditioning("a red circle", negative), steps=4, guidance=5.0)
    reference = pipe("a red circle", negative_prompt=negative or None, num_inference_steps=4, guidance_scale=5.0, height=64, width=64,
                     generator=torch.Generator("cpu").manual_seed(3), output_type="np").images  # fmt: skip
    assert np.array_equal(ours, as_uint8(reference))
    cond = backend.conditioning("a red circle", negative)
    assert set(cond) == {"prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds", "negative_pooled_prompt_embeds"}
    assert backend.default_size == (64, 64)


def test_an_lcm_unet_embeds_the_guidance_instead_of_doubling_the_batch():
    pipe = build_tiny_sdxl_pipeline(time_cond_proj_dim=32)
    backend = Backend(pipe, "mem", CPU, torch.float32, scheduler="lcm")
    # One step: LCM adds no noise after its last step, so the pipeline's generator does not matter.
    ours = backend.render(backend.noise(5, 64, 64), backend.conditioning("a tree", ""), steps=1, guidance=3.0)
    reference = pipe("a tree", num_inference_steps=1, guidance_scale=3.0, height=64, width=64,
                     generator=torch.Generator("cpu").manual_seed(5), output_type="np").images  # fmt: skip
    assert np.array_equal(ours, as_uint8(reference))


def walk_frames(backend, keyframes, lengths, batch_size, steps=3, guidance=5.0):
    spec = RenderSpec(keyframes, plan_walk(lengths, loop=False), 64, 64, steps, guidance, batch_size=batch_size)
    return [image for _, image in render_frames(backend, spec)]


@pytest.mark.parametrize("name", [n for n in names_for("noise") if SAMPLERS[n].stochastic])
def test_a_stochastic_sampler_s_walk_is_the_same_at_any_batch_size_and_keeps_its_keyframes(name):
    backend = Backend(load_pipeline("builtin:tiny", torch.float32), "builtin:tiny", CPU, torch.float32, scheduler=name)
    keyframes = [Keyframe("a red circle", 1), Keyframe("a blue square", 2)]
    one = walk_frames(backend, keyframes, [5], batch_size=1)
    three = walk_frames(backend, keyframes, [5], batch_size=3)
    # Each frame draws its step noise from its own seeds and place: its batch-mates do not matter
    # (up to a level of float rounding between batch sizes).
    assert len(one) == len(three) == 6
    assert all(np.abs(x.astype(int) - y.astype(int)).max() <= 1 for x, y in zip(one, three))
    stills = [image for _, image in render_frames(backend, RenderSpec(keyframes, plan_stills(2), 64, 64, 3, 5.0))]
    assert np.abs(one[0].astype(int) - stills[0].astype(int)).max() <= 1
    assert np.abs(one[5].astype(int) - stills[1].astype(int)).max() <= 1
    # The noise moves with the walk: nearby frames are closer than the keyframes are.
    ends = np.abs(one[0].astype(int) - one[5].astype(int)).mean()
    assert all(np.abs(one[i].astype(int) - one[i + 1].astype(int)).mean() < ends for i in range(5))


def test_a_model_s_own_ancestral_scheduler_is_seeded_per_frame_too(saved_model, tmp_path):
    """A model that ships euler-a in its config gets it, with per-frame noise."""
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = load_pipeline(str(saved_model), torch.float32)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path / "ancestral")
    backend = Backend(load_pipeline(str(tmp_path / "ancestral"), torch.float32), "x", CPU, torch.float32)
    assert backend.scheduler_name == "EulerAncestralDiscreteScheduler"
    keyframes = [Keyframe("a", 1), Keyframe("b", 2)]
    one, three = walk_frames(backend, keyframes, [3], 1), walk_frames(backend, keyframes, [3], 3)
    assert all(np.abs(x.astype(int) - y.astype(int)).max() <= 1 for x, y in zip(one, three))


def test_samplers_are_checked_by_name_before_loading_and_by_family_after(run):
    result = run("generate", "a", *FAST, "--scheduler", "euler_a", code=2)
    assert result.output.startswith("Error: --scheduler must be one of ddim, euler, euler-a, ") and "got 'euler_a'" in result.output
    result = run("generate", "a", *FAST, "--scheduler", "flow-euler", code=2)  # the family, from its small files
    assert result.output == f"Error: --scheduler flow-euler does not fit 'builtin:tiny' (StableDiffusionPipeline); use one of {', '.join(names_for('noise'))}\n"
    # And once loaded, whatever the files said.
    with pytest.raises(BadInput, match=r"^--scheduler flow-euler does not fit Stable Diffusion 1.x/2.x models; use one of ddim, "):
        Backend(load_pipeline("builtin:tiny", torch.float32), "builtin:tiny", CPU, torch.float32, scheduler="flow-euler")
    run("generate", "a", *FAST, "--scheduler", "dpm++", "-o", "old-name.png", "-q")  # earlier versions' name


def test_sdxl_walks_through_all_three_commands_from_a_saved_folder(run, tmp_path, sdxl_folder):
    model = ["--model", sdxl_folder, "--steps", "3", "--guidance", "5", "--scheduler", "euler-a"]
    run("generate", "a red circle", "--seeds", "1,2", *model, "-o", "stills", "-q")
    run("seed-walk", "a red circle", "--seeds", "1,2", *model, "--frames", "4", "-o", "seeds.mp4", "--frames-dir", "s", "-q")
    frames = sorted((tmp_path / "s").glob("frame_*.png"))
    assert len(frames) == 5
    # The keyframe invariant holds for SDXL with a stochastic sampler: generate's pictures.
    assert np.array_equal(read_png(frames[0]), read_png(tmp_path / "stills" / "a-red-circle-1.png"))
    assert np.array_equal(read_png(frames[4]), read_png(tmp_path / "stills" / "a-red-circle-2.png"))
    (tmp_path / "story.txt").write_text("a red circle | seed=1\na blue square | seed=1\n")
    run("prompt-walk", "story.txt", *model, "--frames", "3", "-o", "story.mp4", "--frames-dir", "p", "-q")
    frames = sorted((tmp_path / "p").glob("frame_*.png"))
    assert len(frames) == 4 and np.array_equal(read_png(frames[0]), read_png(tmp_path / "stills" / "a-red-circle-1.png"))
    manifest = json.loads((tmp_path / "story.mp4.json").read_text())
    assert manifest["resolved"]["scheduler"] == "EulerAncestralDiscreteScheduler"
    # And the manifest renders the same frames again.
    run("render", "story.mp4.json", "-o", "again.mp4", "--frames-dir", "q", "-q")
    again = sorted((tmp_path / "q").glob("frame_*.png"))
    assert all(np.array_equal(read_png(a), read_png(b)) for a, b in zip(frames, again))


def test_sd3_renders_what_its_pipeline_renders():
    from latentwalk.tiny import build_tiny_sd3_pipeline

    pipe = build_tiny_sd3_pipeline()
    backend = Backend(pipe, "mem", CPU, torch.float32)
    ours = backend.render(backend.noise(3, 64, 64), backend.conditioning("a red circle", "blurry"), steps=4, guidance=5.0)
    reference = pipe("a red circle", negative_prompt="blurry", num_inference_steps=4, guidance_scale=5.0, height=64, width=64,
                     generator=torch.Generator("cpu").manual_seed(3), output_type="np").images  # fmt: skip
    assert np.array_equal(ours, as_uint8(reference))
    assert backend.family.sampler_kind == "flow" and backend.default_size == (64, 64)


@pytest.mark.parametrize("dev", [False, True])
def test_flux_renders_what_its_pipeline_renders_at_any_aspect(dev):
    from latentwalk.tiny import build_tiny_flux_pipeline

    pipe = build_tiny_flux_pipeline(guidance_embeds=dev)
    warnings = []
    backend = Backend(pipe, "mem", CPU, torch.float32, warn=warnings.append)
    ours = backend.render(backend.noise(3, 64, 48), backend.conditioning("a red circle", "blurry"), steps=4, guidance=3.5)
    reference = pipe("a red circle", num_inference_steps=4, guidance_scale=3.5, height=48, width=64,
                     generator=torch.Generator("cpu").manual_seed(3), output_type="np").images  # fmt: skip
    assert np.array_equal(ours, as_uint8(reference))
    assert warnings == ["Flux has no classifier-free guidance: the negative prompt is not used"]
    assert set(backend.conditioning("a", "")) == {"prompt_embeds", "pooled_prompt_embeds"}


@pytest.fixture(scope="module")
def flow_folders(tmp_path_factory) -> dict[str, Path]:
    from latentwalk.tiny import build_tiny_flux_pipeline, build_tiny_sd3_pipeline

    root = tmp_path_factory.mktemp("flow-models")
    folders = {"sd3": root / "sd3", "flux": root / "flux"}
    build_tiny_sd3_pipeline(seed=3).save_pretrained(folders["sd3"])
    build_tiny_flux_pipeline(seed=4, guidance_embeds=True).save_pretrained(folders["flux"])
    return folders


@pytest.mark.parametrize("family, scheduler", [("sd3", "flow-euler"), ("flux", "flow-euler"), ("flux", "flow-heun")])
def test_flow_families_walk_through_all_three_commands(run, tmp_path, flow_folders, family, scheduler):
    model = ["--model", flow_folders[family], "--steps", "3", "--guidance", "4", "--size", "64x48", "--scheduler", scheduler]
    run("generate", "a red circle", "--seeds", "1,2", *model, "-o", "stills", "-q")
    run("seed-walk", "a red circle", "--seeds", "1,2", *model, "--frames", "3", "-o", "seeds.mp4", "--frames-dir", "s", "-q")
    frames = sorted((tmp_path / "s").glob("frame_*.png"))
    assert len(frames) == 4 and read_png(frames[0]).shape == (48, 64, 3)
    assert np.array_equal(read_png(frames[0]), read_png(tmp_path / "stills" / "a-red-circle-1.png"))
    assert np.array_equal(read_png(frames[3]), read_png(tmp_path / "stills" / "a-red-circle-2.png"))
    (tmp_path / "story.txt").write_text("a red circle | seed=2\na blue square | seed=2\n")
    run("prompt-walk", "story.txt", *model, "--frames", "3", "-o", "story.mp4", "--frames-dir", "p", "-q")
    frames = sorted((tmp_path / "p").glob("frame_*.png"))
    assert len(frames) == 4 and np.array_equal(read_png(frames[0]), read_png(tmp_path / "stills" / "a-red-circle-2.png"))
    result = run("generate", "a", *model[:2], "--scheduler", "euler", code=2)
    assert result.output.startswith("Error: --scheduler euler does not fit ") and "use one of flow-euler, flow-heun" in result.output


def test_every_shipped_preset_loads_and_names_a_sampler_of_its_family():
    from latentwalk.job import resolve_settings
    from latentwalk.presets import shipped

    flow = {"sd3", "flux-schnell", "flux-dev"}
    assert {"sdxl", "sdxl-turbo", "lcm", "sd3", "flux-schnell", "flux-dev"} <= set(shipped())
    for name in shipped():
        settings = resolve_settings(name)
        kind = SAMPLERS[settings.scheduler if settings.scheduler != "dpm++" else "dpm++-2m"].kind
        assert kind == ("flow" if name in flow else "noise"), name


def test_a_latent_consistency_pipeline_is_the_sd_family(saved_model):
    """LCM Dreamshaper ships as LatentConsistencyModelPipeline: same parts, guidance embedded."""
    from diffusers import LatentConsistencyModelPipeline

    sd = load_pipeline(str(saved_model), torch.float32)
    lcm = LatentConsistencyModelPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                                         scheduler=sd.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    backend = Backend(lcm, "lcm", CPU, torch.float32, scheduler="lcm")
    assert backend.family.title == "Stable Diffusion 1.x/2.x" and backend.scheduler_name == "LCMScheduler"
    assert backend.render(backend.noise(1, 64, 64), backend.conditioning("a", ""), 2, 1.0).shape == (1, 64, 64, 3)


def test_steps_and_guidance_default_to_the_model_family_s(sdxl_folder, flow_folders, saved_model):
    from latentwalk.job import resolve_settings

    assert (resolve_settings(None).steps, resolve_settings(None).guidance) == (25, 7.5)
    assert (resolve_settings(None, model=str(saved_model)).steps, resolve_settings(None, model=str(saved_model)).guidance) == (25, 7.5)
    sdxl = resolve_settings(None, model=str(sdxl_folder))
    assert (sdxl.steps, sdxl.guidance) == (30, 5.0)
    flux = resolve_settings(None, model=str(flow_folders["flux"]))  # guidance embedded: dev
    assert (flux.steps, flux.guidance) == (28, 3.5)
    sd3 = resolve_settings(None, model=str(flow_folders["sd3"]), steps=3)  # a flag wins
    assert (sd3.steps, sd3.guidance) == (3, 7.0)
    assert resolve_settings("sd-turbo").steps == 2  # so does a preset


def test_long_prompts_warn_once_per_encoder_that_drops_words():
    from latentwalk.tiny import build_tiny_flux_pipeline

    warnings = []
    backend = Backend(build_tiny_flux_pipeline(), "mem", CPU, torch.float32, warn=warnings.append)
    backend.conditioning("a castle " * 10 + "with dragons", "")  # byte-level CLIP: 100 tokens; T5 reads them all
    assert len(warnings) == 1 and warnings[0].startswith("prompt is longer than the CLIP text encoder's 77 tokens; dropped: ")
    backend.conditioning("a tower " * 100 + "at dusk", "")  # about 700 T5 tokens: T5 drops the end too
    assert len(warnings) == 3 and warnings[2].startswith("prompt is longer than the T5 text encoder's 512 tokens; dropped: ")
    assert "dusk" in warnings[2]


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_long_prompts_read_every_word_in_windows_and_keep_short_prompts_as_they_were(family, saved_model):
    pipe = load_pipeline(str(saved_model), torch.float32) if family == "sd" else build_tiny_sdxl_pipeline()
    warnings = []
    cut = Backend(pipe, "mem", CPU, torch.float32, warn=warnings.append)
    whole = Backend(pipe, "mem", CPU, torch.float32, warn=warnings.append, long_prompts=True)
    short = ("a red circle", "blurry")
    assert all(torch.equal(a, b) for a, b in zip(cut.keyframe_conditioning([short]).values(), whole.keyframe_conditioning([short]).values()))
    # 174 tokens: 3 windows of 75; two prompts that differ at the end.
    long = ["a castle on a hill " * 12 + "at dawn", "a castle on a hill " * 12 + "at dusk"]
    cond = whole.keyframe_conditioning([(long[0], ""), (long[1], ""), short])
    width = pipe.text_encoder.config.hidden_size + (pipe.text_encoder_2.config.hidden_size if family == "sdxl" else 0)
    assert cond["prompt_embeds"].shape == (3, 3 * 77, width) == cond["negative_prompt_embeds"].shape
    assert not torch.equal(cond["prompt_embeds"][0], cond["prompt_embeds"][1])  # the last words count
    assert not warnings
    cut_cond = cut.keyframe_conditioning([(long[0], ""), (long[1], "")])
    assert torch.equal(cut_cond["prompt_embeds"][0], cut_cond["prompt_embeds"][1])  # without: both cut alike
    assert len(warnings) == 2 and warnings[0].endswith("; --long-prompts reads it all")
    # The first window is the prompt's usual encoding, cut at 77 tokens.
    assert torch.equal(cond["prompt_embeds"][0, :77], cut_cond["prompt_embeds"][0])
    if family == "sdxl":
        assert torch.equal(cond["pooled_prompt_embeds"][0], cut_cond["pooled_prompt_embeds"][0])


def test_long_prompts_walk_and_are_part_of_the_job(run, tmp_path, saved_model):
    (tmp_path / "story.txt").write_text("a castle on a hill " * 12 + "at dawn\n" + "a castle on a hill " * 12 + "at dusk\n")
    common = ("--model", saved_model, "--steps", "2", "--frames", "2", "--no-smooth")
    run("prompt-walk", "story.txt", *common, "--long-prompts", "--frames-dir", "long", "-o", "long.mp4")
    settings = json.loads((tmp_path / "long.mp4.json").read_text())["job"]["settings"]
    assert settings["long_prompts"] is True
    cut = run("prompt-walk", "story.txt", *common, "--frames-dir", "cut", "-o", "cut.mp4")
    assert "--long-prompts reads it all" in cut.output
    # Cut, both keyframes read the same 77 tokens and the walk stands still; whole, it moves.
    assert np.array_equal(read_png(tmp_path / "cut" / "frame_000000.png"), read_png(tmp_path / "cut" / "frame_000002.png"))
    assert not np.array_equal(read_png(tmp_path / "long" / "frame_000000.png"), read_png(tmp_path / "long" / "frame_000002.png"))
    again = json.loads(run("render", "long.mp4.json", "-o", "again.mp4", "--json").stdout)
    assert again["frames"] == 3


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, saved_model) -> Path:
    """A tiny LoRA for the saved tiny model, written the way diffusers' trainers write one."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = load_pipeline(str(saved_model), torch.float32)
    torch.manual_seed(7)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    folder = tmp_path_factory.mktemp("lora")
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


def test_loras_and_a_vae_change_the_pictures_and_the_manifest_checks_them(run, tmp_path, saved_model, lora_file, sdxl_folder):
    from latentwalk.tiny import build_tiny_pipeline

    build_tiny_pipeline(seed=5).vae.save_pretrained(tmp_path / "vae")
    model = ["--model", saved_model, "--steps", "3"]
    run("generate", "a castle", *model, "-o", "plain.png", "-q")
    run("generate", "a castle", *model, "--lora", f"{lora_file}:0", "-o", "zero.png", "-q")
    run("generate", "a castle", *model, "--lora", f"{lora_file}:0.8", "-o", "lora.png", "-q")
    run("generate", "a castle", *model, "--vae", tmp_path / "vae", "-o", "vae.png", "-q")
    plain = read_png(tmp_path / "plain.png")
    assert np.array_equal(read_png(tmp_path / "zero.png"), plain)  # scale 0: no change at all
    assert np.abs(read_png(tmp_path / "lora.png").astype(int) - plain).mean() > 1
    assert np.abs(read_png(tmp_path / "vae.png").astype(int) - plain).mean() > 1
    manifest = json.loads((tmp_path / "lora.png.json").read_text())
    assert manifest["job"]["settings"]["lora"] == [[str(lora_file), 0.8]] and manifest["weights"]["lora"][0]["sha256"]
    run("render", "lora.png.json", "-o", "again.png", "-q")
    assert np.array_equal(read_png(tmp_path / "again.png"), read_png(tmp_path / "lora.png"))
    bad = run("generate", "a", *model, "--lora", "missing.safetensors", code=2)
    assert bad.output == "Error: --lora 'missing.safetensors' does not exist\n"
    bad = run("generate", "a", *model, "--lora", f"{lora_file}:x2", code=2)
    assert bad.output == f"Error: --lora '{lora_file}:x2' does not exist\n"
    bad = run("generate", "a", *model, "--lora", f"{lora_file}:99", code=2)
    assert bad.output == f"Error: --lora '{lora_file}:99': the scale must be a number from -10 to 10\n"
    # A VAE that is not one, or of another shape, and a LoRA of another model: one line, exit 2.
    build_tiny_pipeline(seed=5).unet.save_pretrained(tmp_path / "unet")
    bad = run("generate", "a", *model, "--vae", tmp_path / "unet", code=2)
    assert bad.output == f"Error: --vae {str(tmp_path / 'unet')!r} is a UNet2DConditionModel, not a VAE (AutoencoderKL)\n"
    bad = run("generate", "a", "--model", sdxl_folder, "--steps", "2", "--lora", lora_file, code=2)
    assert bad.output.startswith(f"Error: --lora {str(lora_file)!r} does not fit this model") and bad.output.count("\n") == 1
    # The manifest checks its weights are the same files.
    import shutil

    mine = tmp_path / "mine.safetensors"
    shutil.copy(lora_file, mine)
    run("generate", "a castle", *model, "--lora", mine, "-o", "mine.png", "-q")
    mine.write_bytes(mine.read_bytes() + b" ")
    bad = run("render", "mine.png.json", "-o", "mine2.png", code=2)
    assert bad.output == f"Error: weights {str(mine)!r} have changed since the manifest was written (their sha256 differs)\n"


def test_a_turbo_style_render_takes_one_step_without_guidance():
    """SDXL-Turbo: euler-a, 1 step, guidance 0 (no second pass)."""
    pipe = build_tiny_sdxl_pipeline(seed=4)
    backend = Backend(pipe, "mem", CPU, torch.float32, scheduler="euler-a")
    calls = []
    pipe.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    ours = backend.render(backend.noise(2, 64, 64), backend.conditioning("a boat", ""), steps=1, guidance=0.0)
    assert calls == [1]  # one row: no unconditional half
    reference = pipe("a boat", num_inference_steps=1, guidance_scale=0.0, height=64, width=64,
                     generator=torch.Generator("cpu").manual_seed(2), output_type="np").images  # fmt: skip
    assert np.array_equal(ours, as_uint8(reference))


def test_doctor_reports_what_renders_need_and_models_lists_the_cache(run, tmp_path, sdxl_folder, monkeypatch):
    import shutil

    import latentwalk.doctor

    found = json.loads(run("doctor", "--json").stdout)
    checks = {c["name"]: c for c in found["checks"]}
    assert found["ok"] is True and checks["torch"]["ok"] and checks["ffmpeg"]["ok"] and checks["encoder libx264"]["ok"]
    assert checks["extra audio"]["ok"] and checks["extra lora"]["ok"] and "cuda" in checks
    table = run("doctor").stdout
    assert table.splitlines()[-1] == "Everything a render needs works."
    # A broken necessity is exit 1, with the reason.
    monkeypatch.setattr(latentwalk.doctor, "ffmpeg", lambda add: add("ffmpeg", False, "the bundled ffmpeg does not run: gone", needed=True))
    broken = run("doctor", code=1).stdout
    assert "BROKEN" in broken and broken.splitlines()[-1] == "Something a render needs is broken (BROKEN above)."
    # models: the hub cache's diffusion models, with their family.
    hub = tmp_path / "hub"
    monkeypatch.setattr(latentwalk.doctor, "hub_cache", lambda: hub)
    assert run("models").stdout == f"No models in {str(hub)!r}.\n"
    repo = hub / "models--someone--tiny-sdxl"
    shutil.copytree(sdxl_folder, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    listed = [json.loads(line) for line in run("models", "--json").stdout.splitlines()]
    assert [(m["model"], m["family"]) for m in listed] == [("someone/tiny-sdxl", "SDXL")] and listed[0]["bytes"] > 0
    assert run("models").stdout.startswith("someone/tiny-sdxl  SDXL")


def test_a_v_prediction_model_renders_what_its_pipeline_renders(saved_model):
    """SD 2.x predicts v, as its scheduler's config says; the loop follows the scheduler."""
    from diffusers import DDIMScheduler

    pipe = load_pipeline(str(saved_model), torch.float32)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")
    backend = Backend(pipe, "v", CPU, torch.float32)
    ours = backend.render(backend.noise(4, 64, 64), backend.conditioning("a hill", "fog"), steps=3, guidance=6.0)
    reference = pipe("a hill", negative_prompt="fog", num_inference_steps=3, guidance_scale=6.0,
                     generator=torch.Generator("cpu").manual_seed(4), output_type="np").images  # fmt: skip
    assert np.array_equal(ours, as_uint8(reference))


@pytest.mark.parametrize("family, scheduler", [("sdxl", "euler-a"), ("sd3", "flow-euler"), ("flux", "flow-euler")])
def test_shared_walks_in_every_family_keep_their_keyframes_and_render_again_bit_for_bit(run, tmp_path, sdxl_folder, flow_folders, family, scheduler):
    """--share with SDXL (a sampler that adds noise at each step: drawn from each frame's own
    seeds and place) and the flow families (Flux's packed latents): renders start part-way,
    the keyframes are still generate's, and the manifest and shards give the same frames."""
    folder = sdxl_folder if family == "sdxl" else flow_folders[family]
    model = ["--model", folder, "--steps", "8", "--guidance", "4", "--size", "64x48", "--scheduler", scheduler]
    walk = ["seed-walk", "a red circle", "--seeds", "1,2,3", *model, "--frames", "12", "--share"]
    summary = json.loads(run(*walk, "-o", "w.mp4", "--frames-dir", "w", "--json", "-q").stdout)
    assert summary["model_calls"] < summary["model_calls_unshared"]
    starts = json.loads((tmp_path / "w.mp4.json").read_text())["job"]["starts"]
    assert any(step > 0 for *_, step, _, _ in starts)
    run("generate", "a red circle", "--seeds", "1,3", *model, "-o", "stills", "-q")
    frames = sorted((tmp_path / "w").glob("frame_*.png"))
    assert len(frames) == 25
    assert np.array_equal(read_png(frames[0]), read_png(tmp_path / "stills" / "a-red-circle-1.png"))
    assert np.array_equal(read_png(frames[24]), read_png(tmp_path / "stills" / "a-red-circle-3.png"))
    run("render", "w.mp4.json", "-o", "again.mp4", "--frames-dir", "again", "-q")
    assert all(np.array_equal(read_png(a), read_png(b)) for a, b in zip(frames, sorted((tmp_path / "again").glob("frame_*.png")), strict=True))
    for k in (1, 2):
        run(*walk, "--shard", f"{k}/2", "-o", f"part{k}.mp4", "--frames-dir", f"part{k}", "-q")
    parts = sorted([*(tmp_path / "part1").glob("frame_*.png"), *(tmp_path / "part2").glob("frame_*.png")], key=lambda p: p.name)
    assert [p.name for p in parts] == [p.name for p in frames]
    assert all(np.array_equal(read_png(a), read_png(b)) for a, b in zip(parts, frames))
