"""Jobs as plain data: their key decides which finished frames a run may reuse."""

import pytest

from latentwalk.errors import BadInput
from latentwalk.job import Engine, Job, job_key, resolve_settings
from latentwalk.schedule import Keyframe, plan_walk

IDENTITY = {"device": "cpu", "dtype": "float32", "model": {"model": "builtin:tiny", "revision": None}, "versions": {"torch": "2.13.0"}}


def walk(**flags) -> Job:
    settings = resolve_settings("tiny", **flags)
    keyframes = [Keyframe("a castle", 1), Keyframe("a castle", 2)]
    return Job("seed-walk", settings, Engine(), keyframes, plan_walk([4], loop=False))


def test_the_key_changes_with_every_pixel_and_nothing_else():
    key = job_key(walk(), IDENTITY)
    assert key == job_key(walk(), IDENTITY)
    for same in (dict(fps=30.0), dict(crf=20), dict(batch_size=4), dict(device="auto")):
        assert job_key(walk(**same), IDENTITY) == key, same
    for other in (dict(guidance=5.0), dict(steps=9), dict(size="128"), dict(scheduler="euler"), dict(negative="fog")):
        assert job_key(walk(**other), IDENTITY) != key, other
    tiled = walk()
    tiled.engine.vae_tiling = True
    assert job_key(tiled, IDENTITY) != key
    for name, value in (("device", "cuda"), ("dtype", "float16"), ("versions", {"torch": "2.14.0"})):
        assert job_key(walk(), {**IDENTITY, name: value}) != key, name


def test_a_job_round_trips_through_its_dict_and_a_bad_one_is_refused():
    job = walk()
    assert Job.from_dict(job.to_dict()) == job
    data = job.to_dict()
    data["plan"][2][2] = 7  # a keyframe that does not exist
    with pytest.raises(BadInput, match="schedule entry 2 is out of range"):
        Job.from_dict(data)
    data = job.to_dict()
    data["settings"]["steps"] = "many"
    with pytest.raises(BadInput, match="wrong type"):
        Job.from_dict(data)
    with pytest.raises(BadInput, match="not a latentwalk job"):
        Job.from_dict({"command": "seed-walk"})
