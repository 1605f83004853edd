"""Image keyframes (image=FILE): pictures checked before any model loads, fitted to the frame,
inverted by each family, cached, reported, reproduced from manifests."""

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_png
from latentwalk import pictures, shapes
from latentwalk.errors import BadInput
from latentwalk.schedule import check_walk, parse_prompts

SHAPES = ["--preset", "shapes"]
RED = shapes.Scene("large", "red", "circle", "blue")
YELLOW = shapes.Scene("small", "yellow", "square", "black")


def drawn(scene: shapes.Scene, seed: int = 0) -> np.ndarray:
    return shapes.draw(scene, np.random.default_rng(seed))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a size (Pillow reads the header before any pixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + chunk(b"IEND", b"")


# ---- Prompts files --------------------------------------------------------------------------------


def test_image_lines_name_a_picture_relative_to_the_prompts_file(tmp_path):
    text = "a red circle | image=red.png | seed=3\nimage=photos/b.jpg\n| image=/abs/c.webp | frames=5\na plain prompt\n"
    keyframes = parse_prompts(text, 0, source="walk.txt", folder=tmp_path)
    assert [(k.prompt, k.image, k.seed) for k in keyframes] == [
        ("a red circle", str(tmp_path / "red.png"), 3), ("", str(tmp_path / "photos/b.jpg"), 0), ("", "/abs/c.webp", 0), ("a plain prompt", None, 0),
    ]  # fmt: skip
    assert keyframes[2].frames == 5
    for line, message in [("a | image=", "walk.txt:1: image= needs a file name"), ("| seed=2", "walk.txt:1: the line has options but no prompt")]:
        with pytest.raises(BadInput, match=message):
            parse_prompts(line, 0, source="walk.txt", folder=tmp_path)
    # The same picture twice in a row is a still, whatever the seeds say.
    twice = parse_prompts("a | image=x.png | seed=1\na | image=x.png | seed=2\n", 0, folder=tmp_path)
    with pytest.raises(BadInput, match="line 2: two neighbouring keyframes are identical \\(the same picture\\)"):
        check_walk(twice, False, "prompts")


# ---- Checking and fitting a picture (milliseconds) ----------------------------------------------------


def bad_pictures(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (file written, the start of its one line)."""
    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    (folder / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    (folder / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "notes.png").write_text("not a picture\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "zero.png").write_bytes(png_header(0, 64))
    (folder / "huge.png").write_bytes(png_header(20000, 20000))
    (folder / "wide.png").write_bytes(png_header(17000, 100))
    Image.fromarray(pixels).save(folder / "anim.gif")
    Image.fromarray(pixels[:4, :4]).save(folder / "tiny.png")
    (folder / "folder.png").mkdir()
    return {
        "missing.png": ("missing.png", "picture '{p}' does not exist"),
        "folder.png": ("folder.png", "picture '{p}' is a directory"),
        "notes.png": ("notes.png", "'{p}' is not an image latentwalk can read (PNG, JPEG, WebP)"),
        "empty.png": ("empty.png", "'{p}' is not an image latentwalk can read"),
        "zero.png": ("zero.png", "'{p}' is not an image latentwalk can read"),
        "cut.png": ("cut.png", "picture '{p}' is damaged or truncated ("),
        "cut.jpg": ("cut.jpg", "picture '{p}' is damaged or truncated ("),
        "huge.png": ("huge.png", "picture '{p}' is too large (400 megapixels); at most 16384 px a side and 64 megapixels"),
        "wide.png": ("wide.png", "picture '{p}' is 17000x100 px; at most 16384 px a side and 64 megapixels"),
        "anim.gif": ("anim.gif", "'{p}' is a GIF image; latentwalk reads PNG, JPEG, WebP"),
        "tiny.png": ("tiny.png", "picture '{p}' is 4x4 px; a keyframe picture needs at least 8 px a side"),
    }


def test_every_bad_picture_is_one_line_naming_it(tmp_path):
    for name, (file, message) in bad_pictures(tmp_path).items():
        with pytest.raises(BadInput) as error:
            pictures.check_picture(tmp_path / file, "walk.txt:2")
        assert str(error.value).startswith("walk.txt:2: " + message.format(p=tmp_path / file)), name
    good = tmp_path / "good.webp"
    Image.fromarray(drawn(RED)).save(good, lossless=True)
    picture = pictures.check_picture(good, "x")
    assert (picture.width, picture.height, len(picture.sha256)) == (64, 64, 64)
    # A phone's JPEG with a second picture inside (an HDR gain map) opens as MPO: the photo is the first.
    Image.fromarray(drawn(RED)).save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[Image.new("RGB", (16, 16))])
    assert Image.open(tmp_path / "phone.jpg").format == "MPO" and pictures.check_picture(tmp_path / "phone.jpg", "x").width == 64
    assert pictures.load(tmp_path / "phone.jpg", 64, 64, "crop").shape == (64, 64, 3)
    with pytest.raises(BadInput, match="has changed since it was checked"):
        pictures.load(good, 64, 64, "crop", sha256="0" * 64)


def test_a_picture_is_fitted_upright_opaque_and_rgb(tmp_path):
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :20] = (255, 0, 0)  # red left quarter, the rest black
    Image.fromarray(wide).save(tmp_path / "wide.png")
    crop = pictures.load(tmp_path / "wide.png", 32, 32, "crop")
    assert crop.shape == (32, 32, 3) and crop[:, 0].mean() < 40  # the centre: the red quarter is cut off
    pad = pictures.load(tmp_path / "wide.png", 32, 32, "pad")
    assert (pad[0] == 255).all() and (pad[-1] == 255).all() and pad[16, 0, 0] > 200 and pad[16, 0, 1] < 40  # white bars, all of it
    stretch = pictures.load(tmp_path / "wide.png", 32, 32, "stretch")
    assert stretch[16, 2, 0] > 200 and stretch[16, 30].max() < 40
    # EXIF orientation 6: stored on its side, shown turned a quarter clockwise.
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:5] = 255  # the stored top edge ends up on the right
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(tall).save(tmp_path / "turned.jpg", exif=exif, quality=100)
    turned = pictures.check_picture(tmp_path / "turned.jpg", "x")
    assert (turned.width, turned.height) == (40, 20)
    upright = pictures.load(tmp_path / "turned.jpg", 40, 20, "stretch")
    assert upright[:, -3:].mean() > 200 and upright[:, :30].mean() < 30
    # Transparency shows white; grey and 16-bit grey become 8-bit RGB.
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[:8, :, 3] = 255, 255
    Image.fromarray(rgba).save(tmp_path / "cutout.png")
    cutout = pictures.load(tmp_path / "cutout.png", 16, 16, "stretch")
    assert tuple(cutout[2, 8]) == (255, 0, 0) and tuple(cutout[13, 8]) == (255, 255, 255)
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "grey.png")
    assert tuple(pictures.load(tmp_path / "grey.png", 16, 16, "crop")[5, 5]) == (100, 100, 100)
    Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(tmp_path / "deep.png")
    assert abs(int(pictures.load(tmp_path / "deep.png", 16, 16, "crop")[5, 5, 0]) - 128) <= 1
    with pytest.raises(BadInput, match="--fit must be one of crop, pad, stretch, got 'squash'"):
        pictures.load(tmp_path / "grey.png", 16, 16, "squash")


# ---- Through the CLI: one line, exit 2, before any model loads -------------------------------------


@pytest.fixture
def no_model(monkeypatch):
    import latentwalk.backend

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(latentwalk.backend, "load_pipeline", refuse)


def test_bad_pictures_and_fits_are_one_line_and_exit_2_before_the_model_loads(run, tmp_path, no_model):
    for name, (file, message) in bad_pictures(tmp_path).items():
        (tmp_path / "walk.txt").write_text(f"a red circle\n\na picture | image={file}\n")
        result = run("prompt-walk", "walk.txt", *SHAPES, code=2)
        assert result.output.startswith(f"Error: walk.txt:3: {message.format(p=file)}") and result.output.count("\n") == 1, name
    Image.fromarray(drawn(RED)).save(tmp_path / "red.png")
    (tmp_path / "walk.txt").write_text("image=red.png\na blue square\n")
    result = run("prompt-walk", "walk.txt", *SHAPES, "--fit", "squash", code=2)
    assert result.output == "Error: --fit must be one of crop, pad, stretch, got 'squash'\n"


# ---- Inversion: each family, on tiny real pipelines ------------------------------------------------


def family_pipeline(name: str):
    from latentwalk import tiny

    if name == "sd-v":
        from diffusers import DDIMScheduler

        pipe = tiny.build_tiny_pipeline()
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction", timestep_spacing="trailing")
        return pipe, None
    builders = {"sd": tiny.build_tiny_pipeline, "sdxl": tiny.build_tiny_sdxl_pipeline, "sd3": tiny.build_tiny_sd3_pipeline}
    if name == "flux":
        return tiny.build_tiny_flux_pipeline(guidance_embeds=True), None
    if name == "sd-euler":
        return tiny.build_tiny_pipeline(), "euler"
    return builders[name](), None


@pytest.mark.parametrize("name", ["sd", "sd-euler", "sd-v", "sdxl", "sd3", "flux"])
def test_inversion_then_sampling_gives_the_picture_back_in_every_family(name):
    """Random weights draw no pictures, so the latents are compared: sampling the inversion
    lands near the picture's latents, far nearer than sampling a seed's noise does."""
    from latentwalk.backend import Backend

    pipe, scheduler = family_pipeline(name)
    backend = Backend(pipe, "mem", torch.device("cpu"), torch.float32, scheduler=scheduler)
    picture = drawn(RED)
    latents = backend.family.encode_image(torch.from_numpy(picture)[None])
    cond = backend.conditioning("a red circle", "")
    noise = backend.invert(picture, cond, 10, 1.0)
    assert noise.shape == backend.noise(0, 64, 64).shape
    back = backend.denoise(noise, cond, 10, 1.0)
    elsewhere = backend.denoise(backend.noise(1, 64, 64), cond, 10, 1.0)
    assert (back - latents).norm() < 0.2 * (elsewhere - latents).norm()


def test_on_a_trained_model_the_picture_comes_back_and_reads_as_its_scene():
    """builtin:shapes (DDIM, 20 steps) at the preset's guidance 5: the issue's targets."""
    from latentwalk.backend import Backend, load_pipeline

    backend = Backend(load_pipeline("builtin:shapes", torch.float32), "builtin:shapes", torch.device("cpu"), torch.float32, scheduler="ddim")
    for scene in (RED, YELLOW):
        picture = drawn(scene, seed=5)
        cond = backend.conditioning(scene.caption, "")
        frame = backend.render(backend.invert(picture, cond, 20, 5.0), cond, 20, 5.0)[0]
        assert pictures.difference(frame, picture) <= 8 and shapes.classify(frame) == scene


# ---- Walks ---------------------------------------------------------------------------------------------


def keyframe_frame(tmp_path: Path, summary: dict, folder: str, keyframe: int) -> np.ndarray:
    return read_png(tmp_path / folder / f"frame_{summary['keyframe_frames'][keyframe]:06d}.png")


def test_a_picture_s_frame_is_the_same_in_any_walk_and_its_inversion_is_made_once(run, tmp_path):
    Image.fromarray(drawn(RED)).save(tmp_path / "red.png")
    line = f"{RED.caption} | image=red.png"
    walks = {
        "first": [line, "a small green triangle on a gray background | seed=4"],
        "middle": ["a large white square on a black background | seed=2", line, "a small blue circle on a green background | seed=8"],
        "last": ["a large purple triangle on a black background", line],
    }
    seen = {}
    for where, lines in walks.items():
        (tmp_path / f"{where}.txt").write_text("\n".join(lines) + "\n")
        smooth = ["--no-smooth", "--frames", "2"] if where != "middle" else ["--frames", "3"]
        summary = json.loads(run("prompt-walk", f"{where}.txt", *SHAPES, *smooth, "--json", "-q", "--frames-dir", where).stdout)
        k = lines.index(line)
        [report] = summary["pictures"]
        assert report["keyframe"] == k and report["file"] == str(tmp_path / "red.png") and report["difference"] <= 8
        assert summary["inversions"] == (1 if where == "first" else 0)  # the cache's from then on
        seen[where] = keyframe_frame(tmp_path, summary, where, k)
        manifest = json.loads((tmp_path / f"{where}.mp4.json").read_text())
        assert manifest["job"]["keyframes"][k]["image_sha256"] == report["sha256"] and manifest["pictures"] == summary["pictures"]
    assert np.array_equal(seen["first"], seen["middle"]) and np.array_equal(seen["first"], seen["last"])
    assert shapes.classify(seen["first"]) == RED


def test_a_manifest_re_renders_with_its_picture_and_names_it_when_missing(run, tmp_path):
    Image.fromarray(drawn(YELLOW)).save(tmp_path / "yellow.png")
    (tmp_path / "walk.txt").write_text("a large red circle on a blue background\n | image=yellow.png\n")
    run("prompt-walk", "walk.txt", *SHAPES, "--no-smooth", "--frames", "3", "--fit", "pad", "-q", "--frames-dir", "a")
    (tmp_path / "out").mkdir()
    (tmp_path / "walk.mp4.json").rename(tmp_path / "out" / "walk.mp4.json")
    (tmp_path / "yellow.png").rename(tmp_path / "out" / "yellow.png")  # found beside the manifest
    run("render", "out/walk.mp4.json", "-o", "again.mp4", "-q", "--frames-dir", "b")
    assert all(np.array_equal(read_png(x), read_png(y)) for x, y in zip(sorted((tmp_path / "a").glob("*.png")), sorted((tmp_path / "b").glob("*.png")), strict=True))
    (tmp_path / "out" / "yellow.png").unlink()
    result = run("render", "out/walk.mp4.json", "-o", "third.mp4", code=2)
    assert result.output.startswith("Error: the manifest needs the picture 'yellow.png' of keyframe 1 (sha256 ")
    assert "nor beside the manifest" in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "third.mp4").exists()


def test_the_inversion_s_guidance_can_differ_from_the_walk_s(run, tmp_path):
    Image.fromarray(drawn(RED)).save(tmp_path / "red.png")
    (tmp_path / "walk.txt").write_text("a red circle | image=red.png\na blue square\n")  # (with no words, guidance changes nothing)
    walk = ["prompt-walk", "walk.txt", "--preset", "tiny", "--steps", "3", "--frames", "2", "--no-smooth", "--json", "-q"]
    default, unguided = (json.loads(run(*walk, *extra, "-o", f"{name}.mp4").stdout) for name, extra in
                         (("default", []), ("unguided", ["--invert-guidance", "1"])))  # fmt: skip
    assert default["inversions"] == unguided["inversions"] == 1  # another inversion, kept apart
    assert default["pictures"][0]["difference"] != unguided["pictures"][0]["difference"]
    assert json.loads((tmp_path / "unguided.mp4.json").read_text())["job"]["settings"]["invert_guidance"] == 1
    assert run(*walk, "--invert-guidance", "-3", code=2).output == "Error: --invert-guidance must be from 0 to 100, got -3.0\n"


def test_a_sampler_that_adds_noise_is_named_in_a_warning(run, tmp_path):
    Image.fromarray(drawn(RED)).save(tmp_path / "red.png")
    (tmp_path / "walk.txt").write_text("image=red.png\na blue square\n")
    result = run("prompt-walk", "walk.txt", "--preset", "tiny", "--steps", "2", "--frames", "2", "--no-smooth", "--scheduler", "euler-a", "-q")
    assert "Warning: image= keyframes: the EulerAncestralDiscreteScheduler sampler adds fresh noise at every step" in result.output


def test_sdxl_latents_normalised_by_a_mean_and_std_round_trip_as_plain_ones():
    """Playground-style VAEs normalise latents by a per-channel mean and std: encode_image and
    decode undo each other, so the picture the sampler ends on decodes as without them."""
    from latentwalk.backend import Backend
    from latentwalk.tiny import build_tiny_sdxl_pipeline

    backend = Backend(build_tiny_sdxl_pipeline(), "mem", torch.device("cpu"), torch.float32)
    image = torch.from_numpy(drawn(RED))[None]
    plain_latents = backend.family.encode_image(image)
    plain = backend.family.decode(plain_latents)
    channels = backend.pipe.vae.config.latent_channels
    backend.pipe.vae.register_to_config(latents_mean=[0.5] * channels, latents_std=[2.0] * channels)
    latents = backend.family.encode_image(image)
    assert (backend.family.decode(latents).int() - plain.int()).abs().max() <= 1
    assert not torch.allclose(latents, plain_latents)  # normalised: (plain - mean x scale) / std
