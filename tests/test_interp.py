import torch

from latentwalk.interp import lerp, seed_noise, slerp


def test_seed_noise_is_the_cpu_generator_draw():
    expected = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(5))
    assert torch.equal(seed_noise(5, (1, 4, 8, 8)), expected)
    assert not torch.equal(seed_noise(5, (1, 4, 8, 8)), seed_noise(6, (1, 4, 8, 8)))


def test_slerp_and_lerp_return_the_ends_exactly():
    v0, v1 = seed_noise(1, (1, 4, 8, 8)), seed_noise(2, (1, 4, 8, 8))
    for mix in (slerp, lerp):
        assert torch.equal(mix(v0, v1, [0.0]), v0)
        assert torch.equal(mix(v0, v1, [1.0]), v1)


def test_slerp_keeps_the_norm_of_noise_where_lerp_shrinks_it():
    v0, v1 = seed_noise(1, (1, 4, 64, 64)), seed_noise(2, (1, 4, 64, 64))
    norm = v0.norm()
    assert abs(slerp(v0, v1, [0.5]).norm() / norm - 1) < 0.02
    assert abs(lerp(v0, v1, [0.5]).norm() / norm - 0.7071) < 0.02


def test_slerp_rows_are_independent():
    v0, v1 = seed_noise(1, (3, 4, 8, 8)), seed_noise(2, (3, 4, 8, 8))
    t = [0.1, 0.5, 0.9]
    batch = slerp(v0, v1, t)
    for i in range(3):
        assert torch.allclose(batch[i : i + 1], slerp(v0[i : i + 1], v1[i : i + 1], [t[i]]), atol=1e-6)


def test_slerp_of_parallel_rows_falls_back_to_lerp():
    v = seed_noise(1, (1, 16))
    out = slerp(v, 2 * v, [0.5])
    assert torch.isfinite(out).all() and torch.allclose(out, 1.5 * v)
    assert torch.isfinite(slerp(v, v, [0.3])).all()


def test_slerp_of_float16_1024px_latents_does_not_overflow():
    # 4x128x128 values: a float16 dot product over them exceeds float16's 65504.
    v0 = seed_noise(1, (1, 4, 128, 128)).half() * 3
    v1 = seed_noise(2, (1, 4, 128, 128)).half() * 3
    out = slerp(v0, v1, [0.5])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert abs(out.norm() / v0.float().norm() - 1) < 0.02
