"""latentwalk batch: a TOML list of renders, run in one process."""

import json

import pytest

from conftest import read_png

JOBS = """
[[job]]
command = "generate"
prompt = "a red circle"
seeds = "1,2"
steps = 2
output = "stills"

[[job]]
command = "seed-walk"
prompt = "a red circle"
seeds = "1,2"
frames = 3
steps = 2
smooth = false
output = "walk.mp4"

[[job]]
command = "seed-walk"
prompt = "a red circle"
seeds = "1,2"
framez = 3

[[job]]
command = "prompt-walk"
prompts_file = "story.txt"
frames = 2
steps = 2
ease = "zigzag"
output = "bad.mp4"

[[job]]
command = "prompt-walk"
prompts_file = "story.txt"
frames = 2
steps = 2
output = "story.mp4"
"""


@pytest.fixture
def job_file(tmp_path):
    folder = tmp_path / "nightly"
    folder.mkdir()
    (folder / "story.txt").write_text("a red circle\na blue square | seed=3\n")
    (folder / "jobs.toml").write_text(JOBS)
    return folder / "jobs.toml"


def test_a_job_file_renders_the_good_jobs_reports_the_bad_and_skips_finished_ones_next_time(run, job_file, monkeypatch):
    import latentwalk.backend

    loads = []
    original = latentwalk.backend.load_pipeline
    monkeypatch.setattr(latentwalk.backend, "load_pipeline", lambda *a, **k: loads.append(a[0]) or original(*a, **k))
    folder = job_file.parent
    first = run("batch", job_file, code=1)  # run from elsewhere: paths are the job file's folder's
    assert loads == ["builtin:tiny"]  # one model, loaded once for three renders
    lines = first.output.splitlines()
    assert "job 3 (seed-walk): failed: unknown key 'framez' for seed-walk" in lines
    assert any(line.startswith("job 4 (prompt-walk -> ") and "failed: --ease must be one of" in line for line in lines)
    assert lines[-1] == "5 jobs: 3 done, 0 skipped, 2 failed (job 3, 4)"
    assert read_png(folder / "stills" / "a-red-circle-2.png").shape == (64, 64, 3)
    assert (folder / "walk.mp4").is_file() and (folder / "story.mp4").is_file() and not (folder / "bad.mp4").exists()
    assert json.loads((folder / "walk.mp4.json").read_text())["job"]["settings"]["frames"] == 3

    second = [json.loads(line) for line in run("batch", job_file, "--json", code=1).stdout.splitlines()]
    assert [r["state"] for r in second] == ["skipped", "skipped", "failed", "failed", "skipped"]
    assert second[1]["outputs"] == [str(folder / "walk.mp4")]
    assert second[3]["exit_code"] == 2 and second[3]["error"].startswith("--ease must be one of")


def test_a_batch_of_good_jobs_exits_0_with_each_job_s_summary(run, job_file):
    text = JOBS.split("[[job]]")
    job_file.write_text("[[job]]".join(text[:3]))  # the generate and the walk
    results = [json.loads(line) for line in run("batch", job_file, "--json", "--quiet").stdout.splitlines()]
    assert [r["state"] for r in results] == ["done", "done"]
    assert results[1]["summary"]["frames"] == 4 and results[1]["summary"]["output"] == str(job_file.parent / "walk.mp4")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[job]\n", "is not valid TOML"),
        ("title = 'x'\n", "unknown top-level key 'title'; jobs are [[job]] tables"),
        ("", "has no [[job]] tables"),
    ],
)
def test_a_job_file_that_is_not_one_is_one_line(run, tmp_path, text, message):
    (tmp_path / "jobs.toml").write_text(text)
    result = run("batch", "jobs.toml", code=2)
    assert result.output.startswith("Error: job file 'jobs.toml'") and message in result.output
    assert result.output.count("\n") == 1
    assert run("batch", "missing.toml", code=2).output == "Error: job file 'missing.toml' does not exist\n"


def test_a_job_s_values_keep_their_types_and_flags(tmp_path):
    import typer.main

    from latentwalk.batch import to_argv
    from latentwalk.cli import app

    params = {name: {p.name: p for p in typer.main.get_command(app).commands[name].params} for name in ("seed-walk",)}
    job = {"command": "seed-walk", "prompt": "-a dash", "seeds": "1,2", "frames": 4, "smooth": False, "loop": True,
           "lora": ["a.safetensors", "b.safetensors:0.5"], "model": "org/name", "output": "x.mp4"}  # fmt: skip
    entry = to_argv(1, job, params, tmp_path)
    assert entry.error is None
    assert entry.argv == ["seed-walk", "--seeds", "1,2", "--frames", "4", "--no-smooth", "--loop", "--lora", "a.safetensors",
                          "--lora", "b.safetensors:0.5", "--model", "org/name", "--output", str(tmp_path / "x.mp4"), "--", "-a dash"]  # fmt: skip
    assert to_argv(2, {"command": "seed-walk", "prompt": "x", "loop": "yes"}, params, tmp_path).error == "loop must be true or false, got 'yes'"
    assert to_argv(3, {"command": "seed-walk", "seeds": "1"}, params, tmp_path).error == "seed-walk needs prompt"
    assert to_argv(4, {"command": "render"}, params, tmp_path).error == "command must be one of generate, seed-walk, prompt-walk, got 'render'"
    assert "use --json or --quiet on batch itself" in to_argv(5, {"command": "seed-walk", "prompt": "x", "quiet": True}, params, tmp_path).error


def test_shell_completion_completes_commands_and_options():
    from typer.testing import CliRunner

    from latentwalk.cli import app

    def complete(words: str) -> list[str]:
        env = {"_LATENTWALK_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
        return CliRunner().invoke(app, [], env=env, prog_name="latentwalk").output.split()

    assert complete("latentwalk seed-") == ["seed-walk"]
    assert "--long-prompts" in complete("latentwalk prompt-walk --lo")
