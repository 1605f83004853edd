"""Benchmark latentwalk against stable-diffusion-videos 0.9.2 (the peer), side by side.

    python scripts/bench.py                  # CPU: SD 1.5 architecture, 128px, 4 steps, 12 frames
    python scripts/bench.py --device cuda    # GPU: 512px, 25 steps, float16, batch 4, 48 frames
    python scripts/bench.py --skip-peer      # latentwalk rows only
    python scripts/bench.py --compile        # also latentwalk --compile (minutes of compiling)

Both tools render the same walk (3 prompts, 3 seeds, the same number of frames, steps, size,
scheduler, guidance, batch size and dtype) with the same model: a randomly initialised
pipeline of the real SD 1.5 architecture (UNet 860M, VAE, CLIP ViT-L text encoder), saved with
save_pretrained. Compute does not depend on weight values, so random weights time the same.
Each run is a fresh process, so peak RSS is its own. Every number printed comes from this run.

The peer lives in its own virtualenv under the work folder (LATENTWALK_BENCH_DIR, default
~/.cache/latentwalk-bench), with torch 2.13.0 and the same diffusers and transformers as
latentwalk. As released it does not import there; the shims, each the least that makes it run,
none touching its algorithm:
  1. torchvision: the index's build is a CUDA build that breaks beside a CPU torch, and the peer
     uses only torchvision.io.write_video and transforms.functional.pil_to_tensor. A stub module
     provides both, written as torchvision writes them (PyAV, libx264, the peer's options). It is
     put in sys.modules after diffusers and transformers have imported (seeing no torchvision),
     since a torchvision on the path makes them import parts of it the stub does not have.
  2. transformers.CLIPFeatureExtractor: removed in transformers 5; it was an alias of
     CLIPImageProcessor, and the peer uses it only as the type of its feature_extractor
     component (None here: no safety checker, as in latentwalk).
Never install torchvision into latentwalk's own environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("LATENTWALK_BENCH_DIR", Path.home() / ".cache" / "latentwalk-bench"))
PEER_VERSION = "0.9.2"

PROMPTS = ["a medieval castle at dawn", "a medieval castle at noon", "a medieval castle at night"]
SEEDS = [11, 22, 33]

# Shared by both child processes: times UNet and VAE calls and reports one JSON line.
COMMON = '''
import json, resource, time
import torch

def instrument(pipe, device):
    """Time every UNet forward and VAE decode (synchronising the GPU around each)."""
    spent = {"unet": 0.0, "vae": 0.0}
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    def timed(fn, key):
        def wrapper(*args, **kwargs):
            sync()
            started = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            spent[key] += time.perf_counter() - started
            return out
        return wrapper
    pipe.unet.forward = timed(pipe.unet.forward, "unet")
    pipe.vae.decode = timed(pipe.vae.decode, "vae")
    return spent

def peak_rss_mb():
    """This process's own high-water mark (VmHWM starts afresh at exec; ru_maxrss keeps the
    parent's peak across fork and exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def report(seconds, frames, spent, device, **extra):
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    print(json.dumps({
        "seconds": seconds, "frames": frames, "unet": spent["unet"], "vae": spent["vae"],
        "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": peak_gpu, **extra,
    }))
'''

PEER_DRIVER = '''
import json, sys, time
from pathlib import Path
import torch
from bench_common import instrument, report
import diffusers, transformers  # noqa: decide "no torchvision" before the shim exists
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # noqa
import peer_shims
peer_shims.install()
from stable_diffusion_videos import StableDiffusionWalkPipeline

a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
dtype = getattr(torch, a["dtype"])
pipe = StableDiffusionWalkPipeline.from_pretrained(a["model"], torch_dtype=dtype, safety_checker=None, feature_extractor=None)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
pipe = pipe.to(a["device"])
pipe.set_progress_bar_config(disable=True)
spent = instrument(pipe, a["device"])
started = time.perf_counter()
pipe.walk(
    prompts=a["prompts"], seeds=a["seeds"], num_interpolation_steps=a["peer_steps"],
    output_dir=a["out"], name="walk", fps=24, num_inference_steps=a["steps"],
    guidance_scale=a["guidance"], height=a["size"], width=a["size"], batch_size=a["batch"],
)
seconds = time.perf_counter() - started
frames = len(list(Path(a["out"], "walk").glob("walk_*/*.png")))
report(seconds, frames, spent, a["device"])
'''

# Shim 1. Registered in sys.modules only after diffusers and transformers have imported and
# found no torchvision, so they keep working as without it; only the peer sees these two functions.
PEER_SHIMS = '''
import sys, types
import av
import numpy as np
import torch


def pil_to_tensor(pic):
    """PIL image -> uint8 tensor (C, H, W), as torchvision does."""
    return torch.as_tensor(np.array(pic, copy=True)).permute(2, 0, 1).contiguous()


def write_video(filename, video_array, fps, video_codec="libx264", options=None, **audio):
    """(T, H, W, C) uint8 frames -> video through PyAV, as torchvision.io.write_video does
    (no audio: the benchmark has none)."""
    video_array = np.asarray(video_array)
    with av.open(filename, mode="w") as container:
        stream = container.add_stream(video_codec, rate=round(fps))
        stream.width, stream.height = video_array.shape[2], video_array.shape[1]
        stream.pix_fmt = (options or {}).get("pix_fmt", "yuv420p")
        stream.options = {k: v for k, v in (options or {}).items() if k != "pix_fmt"}
        for frame in video_array:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def install():
    torchvision = types.ModuleType("torchvision")
    io, transforms = types.ModuleType("torchvision.io"), types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    io.write_video, functional.pil_to_tensor = write_video, pil_to_tensor
    torchvision.io, torchvision.transforms, transforms.functional = io, transforms, functional
    sys.modules.update({"torchvision": torchvision, "torchvision.io": io,
                        "torchvision.transforms": transforms, "torchvision.transforms.functional": functional})
    # Shim 2.
    import transformers
    transformers.CLIPFeatureExtractor = transformers.CLIPImageProcessor
'''


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def build_sd15_random(folder: Path) -> None:
    """The real SD 1.5 architecture with random weights, saved like any diffusers model."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from latentwalk.tiny import byte_level_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # SD 1.5's config
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )  # fmt: skip
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=512, eos_token_id=513, pad_token_id=513,
    ))  # fmt: skip
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=byte_level_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip
    n_unet = sum(p.numel() for p in unet.parameters()) / 1e6
    log(f"saving random SD 1.5 architecture (UNet {n_unet:.0f}M parameters) to {folder}")
    pipe.save_pretrained(folder)


def build_model(name: str) -> None:
    folder = WORK / name
    if name == "sd15-random":
        build_sd15_random(folder)
    else:
        from latentwalk.tiny import build_tiny_pipeline

        build_tiny_pipeline().save_pretrained(folder)


def ensure_model(name: str) -> Path:
    """Built once, in a child process, so this process stays small (children inherit nothing)."""
    folder = WORK / name
    if not (folder / "model_index.json").exists():
        subprocess.run([sys.executable, __file__, "--build", name], check=True)
    return folder


def ensure_peer() -> Path:
    """The peer's own virtualenv: torch first (the CPU wheel), then its needs, then the peer."""
    venv = WORK / "peer-venv"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        import diffusers
        import transformers

        log(f"installing stable-diffusion-videos {PEER_VERSION} into {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        # Its declared needs, less torchvision (shimmed), gradio/fire (UI only) and realesrgan
        # (upsampling, off here; it would pull torchvision).
        subprocess.run([*pip, f"diffusers=={diffusers.__version__}", f"transformers=={transformers.__version__}",
                        "librosa", "av", "opencv-python-headless", "scipy"], check=True)  # fmt: skip
        subprocess.run([*pip, "--no-deps", f"stable-diffusion-videos=={PEER_VERSION}"], check=True)
        (venv / ".ready").touch()
    (WORK / "shims" / "peer_shims.py").write_text(PEER_SHIMS)
    (WORK / "shims" / "peer_driver.py").write_text(PEER_DRIVER)
    return python


def run_child(command: list[str], env: dict | None = None) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise SystemExit(f"child failed: {' '.join(command[:3])}...\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_peer(python: Path, spec: dict, out: Path) -> dict:
    args = {**spec, "out": str(out), "peer_steps": [spec["frames"] // 2] * 2}
    env = {"PYTHONPATH": str(WORK / "shims"), "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    return run_child([str(python), str(WORK / "shims" / "peer_driver.py"), json.dumps(args)], env)


def run_ours(spec: dict, out: Path) -> dict:
    return run_child([sys.executable, __file__, "--child", json.dumps({**spec, "out": str(out)})])


def child_ours(spec: dict) -> None:
    """latentwalk's render of the same walk: the library calls the CLI makes, instrumented."""
    sys.path.insert(0, str(WORK / "shims"))  # bench_common, written by main()
    from collections import defaultdict

    import torch
    from bench_common import instrument, report

    from latentwalk.backend import Backend, load_pipeline
    from latentwalk.render import RenderSpec, render_frames, write_frames
    from latentwalk.schedule import Keyframe, plan_walk
    from latentwalk.video import VideoWriter

    torch.set_num_threads(spec["threads"])
    device, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    backend = Backend(load_pipeline(spec["model"], dtype), spec["model"], device, dtype, scheduler="ddim")
    compile_started = time.perf_counter()
    if spec.get("compile"):
        backend.optimize(compile=True)
        backend.warm_up(spec["size"], spec["size"], spec["batch"], spec["guidance"])
    compile_seconds = time.perf_counter() - compile_started
    spent = instrument(backend.pipe, spec["device"])
    started = time.perf_counter()
    keyframes = [Keyframe(p, s) for p, s in zip(spec["prompts"], spec["seeds"])]
    half = spec["frames"] // 2
    # The same number of frames as the peer, which repeats each inner keyframe: n + (n-1) + 1.
    plan = plan_walk([half, spec["frames"] - half - 1], loop=False)
    size = spec["size"]
    render = RenderSpec(keyframes, plan, size, size, spec["steps"], spec["guidance"], spec["batch"], timings=defaultdict(float))
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    with VideoWriter(out / "walk.mp4", size, size, 24) as video:
        written = write_frames(render_frames(backend, render), lambda frame, image: video.write(image), render.timings)
    report(time.perf_counter() - started, written, spent, spec["device"], compile=compile_seconds)


COLUMNS = "| run | frames | seconds | frames/s | peak RSS MB | UNet+VAE share | overhead ms/frame |"


def row(name: str, r: dict) -> str:
    """Overhead: wall time outside UNet and VAE calls, per frame. It is what the tool itself costs,
    and unlike wall time it barely moves when a noisy machine slows the model down."""
    model = r["unet"] + r["vae"]
    gpu = f" | {r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] else ""
    return (f"| {name} | {r['frames']} | {r['seconds']:.1f} | {r['frames'] / r['seconds']:.3f} | "
            f"{r['peak_rss_mb']:.0f}{gpu} | {model / r['seconds']:.1%} | "
            f"{1000 * (r['seconds'] - model) / r['frames']:.0f} |")  # fmt: skip


def table_header(gpu: bool) -> str:
    header = COLUMNS.replace(" | UNet", " | peak GPU MB | UNet") if gpu else COLUMNS
    return header + "\n|" + "---|" * (header.count("|") - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=2, help="Runs of each tool, alternating (0: only the memory and --compile rows).")
    parser.add_argument("--compile", action="store_true", help="Also time latentwalk with --compile (minutes of compiling on a CPU).")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_ours(json.loads(args.child))
    if args.build:
        return build_model(args.build)

    gpu = args.device.startswith("cuda")
    spec = dict(
        prompts=PROMPTS, seeds=SEEDS, device=args.device, threads=args.threads,
        size=512 if gpu else 128, steps=25 if gpu else 4, frames=48 if gpu else 12,
        batch=4 if gpu else 1, dtype="float16" if gpu else "float32", guidance=7.5,
    )  # fmt: skip
    # The children's shared timing code, written once for every child of this run.
    (WORK / "shims").mkdir(parents=True, exist_ok=True)
    (WORK / "shims" / "bench_common.py").write_text(COMMON)
    out = WORK / "out" / time.strftime("%Y%m%d-%H%M%S")
    peer_python = None if args.skip_peer else ensure_peer()
    spec["model"] = str(ensure_model("sd15-random"))
    print(f"Walk: {len(PROMPTS)} prompts, {spec['frames']} frames, {spec['size']}px, {spec['steps']} DDIM steps, "
          f"guidance {spec['guidance']}, batch {spec['batch']}, {spec['dtype']}, device {args.device}, "
          f"{spec['threads']} torch threads")  # fmt: skip
    if args.repeat:
        print(table_header(gpu))
    # Alternate the tools, so neither always runs on a colder cache or a busier machine.
    runs = {"latentwalk": [], "peer": []}
    for i in range(args.repeat):
        runs["latentwalk"].append(run_ours(spec, out / f"ours-{i}"))
        print(row(f"latentwalk, run {i + 1}", runs["latentwalk"][-1]), flush=True)
        if peer_python:
            runs["peer"].append(run_peer(peer_python, spec, out / f"peer-{i}"))
            print(row(f"stable-diffusion-videos {PEER_VERSION}, run {i + 1}", runs["peer"][-1]), flush=True)
    if peer_python and args.repeat:
        for label, pick in (("best", min), ("median", statistics.median)):
            ours = pick(r["seconds"] for r in runs["latentwalk"])
            peer = pick(r["seconds"] for r in runs["peer"])
            print(f"{label} of {args.repeat}: latentwalk {ours:.1f}s, peer {peer:.1f}s, "
                  f"latentwalk / peer wall time {ours / peer:.3f} ({peer / ours:.2f}x the peer's frames/s)")  # fmt: skip
        overhead = {
            name: statistics.median((r["seconds"] - r["unet"] - r["vae"]) / r["frames"] for r in rs)
            for name, rs in runs.items()
        }  # fmt: skip
        print(f"median overhead per frame: latentwalk {1000 * overhead['latentwalk']:.0f} ms, "
              f"peer {1000 * overhead['peer']:.0f} ms")  # fmt: skip
    if args.compile:
        compiled = run_ours(dict(spec, compile=True), out / "ours-compiled")
        print(f"\n--compile (compiling took {compiled['compile']:.0f}s, not counted below):")
        print(table_header(gpu))
        print(row("latentwalk --compile, after warm-up", compiled), flush=True)

    # Memory does not grow with the video's length: the same walk at N and 10N frames.
    tiny = str(ensure_model("tiny-random"))
    small = dict(spec, model=tiny, size=256, steps=4, batch=1, dtype="float32")
    print("\nMemory scaling (builtin:tiny architecture, 256px, 4 steps):")
    print(table_header(gpu))
    scaled = {}
    for n in (24, 240):
        scaled[n] = run_ours(dict(small, frames=n), out / f"ours-{n}")
        print(row(f"latentwalk, {n} frames", scaled[n]), flush=True)
        if peer_python:
            print(row(f"peer, {n} frames", run_peer(peer_python, dict(small, frames=n), out / f"peer-{n}")), flush=True)
    growth = scaled[240]["peak_rss_mb"] / scaled[24]["peak_rss_mb"] - 1
    print(f"\nlatentwalk peak RSS at 10N frames vs N: {growth:+.1%}")


if __name__ == "__main__":
    main()
