"""Interpolation math as small pure functions of tensors.

Everything is done in float32 whatever the model's dtype: a float16 slerp of 1024px noise
overflows in the dot product. Functions take one row per frame (shape [B, ...]) and one weight
per row, so a batch may mix frames from different segments.
"""

import hashlib

import torch


def seed_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise for a seed, drawn on the CPU in float32 so a seed means the same
    picture on every device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def step_seed(seed: int, step: int) -> int:
    """The seed of the fresh noise a stochastic sampler adds at `step` of a frame of `seed`:
    a hash, so no two (seed, step) share noise and none is the initial noise's."""
    digest = hashlib.sha256(f"latentwalk-step:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch takes a signed 64-bit seed


def _weights(t, like: torch.Tensor) -> torch.Tensor:
    """One weight per row, shaped to broadcast over the rest of `like`."""
    t = torch.as_tensor(t, dtype=torch.float32, device=like.device)
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def lerp(v0: torch.Tensor, v1: torch.Tensor, t) -> torch.Tensor:
    """Linear interpolation of each row of v0 toward v1."""
    v0, v1 = v0.float(), v1.float()
    t = _weights(t, v0)
    # Written as a weighted sum (not v0 + t*(v1-v0)) so t=0 and t=1 return the ends exactly.
    return (1 - t) * v0 + t * v1


def slerp(v0: torch.Tensor, v1: torch.Tensor, t, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation of each row of v0 toward v1 (each row taken as one vector).

    Keeps the norm of Gaussian noise along the way, so middle frames are not washed out.
    Falls back to lerp where the rows are nearly parallel; returns the ends exactly at t=0 and t=1.
    """
    v0, v1 = v0.float(), v1.float()
    t = _weights(t, v0)
    a, b = v0.flatten(1), v1.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    cos = cos.clamp(-1.0, 1.0).reshape(t.shape[0], *t.shape[1:])
    theta = torch.acos(cos)
    sin_theta = torch.sin(theta)
    w0 = torch.sin((1 - t) * theta) / sin_theta
    w1 = torch.sin(t * theta) / sin_theta
    parallel = cos > dot_threshold
    w0 = torch.where(parallel, 1 - t, w0)
    w1 = torch.where(parallel, t, w1)
    w0 = torch.where(t == 0, 1.0, torch.where(t == 1, 0.0, w0))
    w1 = torch.where(t == 0, 0.0, torch.where(t == 1, 1.0, w1))
    return w0 * v0 + w1 * v1


INTERPOLATIONS = {"slerp": slerp, "lerp": lerp}
