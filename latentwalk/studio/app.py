"""The studio's web app (FastAPI): the job API the page and scripts use, and the page itself.

Security, by default (the holes other local servers shipped: CSRF, DNS rebinding, path
traversal): every request's Host must be the server's own, and its Origin too when it has one
(a browser on another site sends one; curl sends none); on any address but loopback a token is
required on every route, as `Authorization: Bearer TOKEN` or the cookie the page gets from
`?token=TOKEN`; no route takes a file-system path (outputs are named, and only a job's own
are served); nothing is fetched from anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import secrets
import threading
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from latentwalk.errors import BadInput
from latentwalk.studio.jobs import UPLOADED, Worker, prepare
from latentwalk.studio.store import Store

STATIC = Path(__file__).parent / "static"
COOKIE = "latentwalk_token"
TERMINAL = ("done", "failed", "cancelled")
UPLOAD_LIMIT = 200 * 1024 * 1024  # an audio file; a four-minute WAV is about 40 MB
AUDIO = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".webm")
PICTURES = (".png", ".jpg", ".jpeg", ".webp")  # image= keyframes of a prompt walk


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(outputs: Path, host: str = "127.0.0.1", port: int = 7860, token: str | None = None, worker: bool = True) -> FastAPI:
    """The app over `outputs`. On a non-loopback host without a token, one is generated
    (app.state.token), as Jupyter does."""
    outputs = outputs.resolve()
    outputs.mkdir(parents=True, exist_ok=True)
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    store = Store(outputs / ".studio")
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.worker.stop()  # uvicorn's shutdown (Ctrl-C), a test client's exit

    app = FastAPI(title="latentwalk studio", description="Jobs over latentwalk's render engine: the page's only way in.", lifespan=lifespan)
    app.state.token, app.state.store, app.state.outputs = token, store, outputs
    names = {"localhost", "127.0.0.1", "[::1]"} if is_loopback(host) else {host if ":" not in host else f"[{host}]"}
    hosts = {f"{name}:{port}" for name in names} | (names if port in (80, 443) else set())
    app.state.hosts = hosts
    app.state.worker = Worker(store, outputs)
    measuring = threading.Lock()
    if worker:
        app.state.worker.start()

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.headers.get("host", "") not in app.state.hosts:
            return JSONResponse({"error": "this server does not answer to that Host"}, status_code=403)
        origin = request.headers.get("origin")
        if origin is not None and re.sub(r"^https?://", "", origin) not in app.state.hosts:
            return JSONResponse({"error": "requests from other sites are refused"}, status_code=403)
        given_query = request.query_params.get("token")
        if app.state.token is not None:
            bearer = request.headers.get("authorization", "")
            # A header first, then the URL's (a fresh link wins over an old cookie), then the cookie.
            given = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else given_query or request.cookies.get(COOKIE)
            if not given or not secrets.compare_digest(given.encode(), app.state.token.encode()):
                return JSONResponse({"error": "a token is required: Authorization: Bearer TOKEN, or open the URL printed at start"}, status_code=401)
        response = await call_next(request)
        if app.state.token is not None and given_query:  # the page keeps it for its own requests
            response.set_cookie(COOKIE, given_query, httponly=True, samesite="strict")
        return response

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/presets")
    def presets():
        """The shipped presets' names, for the page's picker."""
        from latentwalk.presets import shipped

        return sorted(shipped())

    @app.post("/api/jobs", status_code=201)
    async def submit(request: Request):
        """A job exactly as one [[job]] table of a `batch` file, as JSON; `prompts` may carry a
        prompt walk's prompts file. 422 with the CLI's one line if it is not a good job."""
        try:
            table = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=422)
        job_id = uuid.uuid4().hex[:12]
        try:
            prepared = await asyncio.to_thread(prepare, table, outputs, job_id)
        except BadInput as e:
            return JSONResponse({"error": str(e)}, status_code=422)
        store.add(prepared.table, prepared.command, prepared.outputs, job_id)
        app.state.worker.wake.set()
        return {"id": job_id, "warnings": prepared.plan.get("warnings", [])}

    @app.post("/api/check")
    async def check(request: Request):
        """A job checked as POST /api/jobs checks it, and not queued: what it would make (`frames`,
        `fps`, `seconds`, and `keyframes`: where each falls in seconds, as the walk places them,
        the music's beats and at= times included), or 422 with its one line. The page asks this
        as a walk is composed, to draw the keyframes on the audio's timeline."""
        try:
            table = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=422)
        try:
            prepared = await asyncio.to_thread(prepare, table, outputs, "check-" + uuid.uuid4().hex[:12], False)
        except BadInput as e:
            return JSONResponse({"error": str(e)}, status_code=422)
        return prepared.plan

    @app.get("/api/jobs")
    def jobs():
        return [public(job) for job in store.all()]

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str):
        found = store.get(job_id)
        return public(found) if found else JSONResponse({"error": "no such job"}, status_code=404)

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        found = store.get(job_id)
        if found is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        if not store.cancel(job_id):
            return JSONResponse({"error": f"the job is {found['state']}"}, status_code=409)
        return public(store.get(job_id))

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request):
        """Server-Sent Events: the job's state whenever it changes, first on connecting (a
        reload, a second tab, a Last-Event-ID: the current state, then on), until it ends."""
        if store.get(job_id) is None:
            return JSONResponse({"error": "no such job"}, status_code=404)

        async def stream():
            sent = None
            while not await request.is_disconnected():
                found = store.get(job_id)
                if found["version"] != sent:
                    sent = found["version"]
                    yield f"id: {sent}\nevent: job\ndata: {json.dumps(public(found))}\n\n"
                    if found["state"] in TERMINAL:
                        return
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.get("/api/jobs/{job_id}/files/{name}")
    def file(job_id: str, name: str):
        """An output of the job by name (its video with range requests, PNGs, manifests), or
        `latest.png`, its latest finished frame. Nothing else on disk."""
        found = store.get(job_id)
        allowed = {} if found is None else {n: outputs / n for n in found["outputs"]}
        allowed.update({f"{n}.json": outputs / f"{n}.json" for n in list(allowed)})
        if found is not None:
            allowed["latest.png"] = outputs / ".studio" / f"{job_id}.latest.png"
            if name == "smoothness.png" and found["state"] == "done" and is_video(found):
                try:
                    smoothness_of(found)  # drawn on first asking
                except BadInput as e:
                    return JSONResponse({"error": str(e)}, status_code=422)
                allowed[name] = outputs / ".studio" / f"{job_id}.smoothness.png"
        path = allowed.get(name)
        if path is None or not path.is_file():
            return JSONResponse({"error": "no such file"}, status_code=404)
        return FileResponse(path)

    @app.get("/api/jobs/{job_id}/smoothness")
    def smoothness(job_id: str):
        """How smoothly a finished walk's video moves, as `latentwalk inspect --json` reads it
        back from the file (with the job's audio: its envelope per frame and their correlation).
        `files/smoothness.png` is inspect's plot of it."""
        found = store.get(job_id)
        if found is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        if found["state"] != "done" or not is_video(found):
            return JSONResponse({"error": "a finished walk's video is measured; this job is " + (found["state"] if is_video(found) else "a still")}, status_code=409)
        try:
            return smoothness_of(found)
        except BadInput as e:
            return JSONResponse({"error": str(e)}, status_code=422)

    def smoothness_of(job: dict) -> dict:
        """inspect's figures and plot of a done job's video, made once and kept beside its state;
        BadInput (its names, not the server's paths) if the video cannot be measured."""
        kept = outputs / ".studio" / f"{job['id']}.smoothness.json"
        with measuring:  # two first askings (the page's plot and its figures) measure once
            if not kept.is_file():
                try:
                    measure(job, kept)
                except (BadInput, OSError) as e:
                    raise BadInput(str(e).replace(str(outputs) + "/", "")) from None
        return json.loads(kept.read_text())

    def measure(job: dict, kept: Path) -> None:
        from latentwalk.inspect import draw_plot, inspect_video

        audio = job["table"].get("audio")
        result = inspect_video(outputs / job["outputs"][0], None if audio is None else outputs / audio)
        result["video"] = job["outputs"][0]  # names, as everywhere in the API
        if "audio" in result:
            result["audio"]["file"] = audio
        picture = kept.with_suffix(".png")
        draw_plot([result]).save(picture.with_suffix(".tmp"), format="PNG")
        picture.with_suffix(".tmp").replace(picture)
        kept.with_suffix(".part").write_text(json.dumps(result))
        kept.with_suffix(".part").replace(kept)

    @app.get("/api/uploads/{name}")
    def heard(name: str, start: float = 0.0, duration: float | None = None):
        """An uploaded audio file as the walk hears it: its section's `duration`, `tempo`,
        `beats` and `onsets` (seconds from `start`), and its percussive `envelope` (at most
        2000 values from 0 to 1, `rate` per second), for the page's timeline."""
        path = outputs / name
        if not UPLOADED.fullmatch(name) or not path.is_file():
            return JSONResponse({"error": "no such upload"}, status_code=404)
        from latentwalk.audio import MIN_SECONDS, analyze

        if not (math.isfinite(start) and start >= 0):
            return JSONResponse({"error": f"start must be 0 or more seconds, got {start}"}, status_code=422)
        if duration is not None and not (math.isfinite(duration) and duration >= MIN_SECONDS):
            return JSONResponse({"error": f"duration must be at least {MIN_SECONDS:g} seconds, got {duration}"}, status_code=422)
        try:
            analysis = analyze(path, start, duration)
        except BadInput as e:
            return JSONResponse({"error": str(e).replace(str(path), name)}, status_code=422)
        envelope = np.asarray(analysis.envelope, dtype=np.float64)
        pool = max(1, -(-len(envelope) // 2000))  # each value the loudest of its span: hits stay visible
        padded = np.pad(envelope, (0, (-len(envelope)) % pool))
        pooled = padded.reshape(-1, pool).max(axis=1) if len(padded) else padded
        top = float(pooled.max()) if len(pooled) else 0.0
        return {
            "name": name, "start": start, "duration": round(analysis.duration, 4), "tempo": analysis.tempo,
            "beats": [round(b, 4) for b in analysis.beats], "onsets": [round(o, 4) for o in analysis.onsets],
            "rate": analysis.rate / pool, "envelope": [round(v / top, 4) if top > 0 else 0.0 for v in pooled],
        }  # fmt: skip

    @app.post("/api/uploads", status_code=201)
    async def upload(request: Request, name: str):
        """An audio file for a music walk, or a picture for a prompt walk's image= keyframe, as
        the raw body; `name` is its file name. Stored inside --outputs under a new name, which a
        job's `audio` (or a prompts line's image=) then gives."""
        suffix = Path(name).suffix.lower()
        if suffix not in AUDIO + PICTURES:
            return JSONResponse({"error": f"an upload is an audio file ({', '.join(AUDIO)}) or a picture ({', '.join(PICTURES)})"}, status_code=422)
        size = int(request.headers.get("content-length") or 0)
        if size > UPLOAD_LIMIT:
            return JSONResponse({"error": f"the file is over {UPLOAD_LIMIT // 2**20} MB"}, status_code=413)
        body = await request.body()
        if len(body) > UPLOAD_LIMIT or not body:
            return JSONResponse({"error": "the file is empty or too large"}, status_code=413 if body else 422)
        stored = f"upload-{uuid.uuid4().hex[:12]}{suffix}"
        path = outputs / stored
        path.write_bytes(body)
        try:
            if suffix in PICTURES:
                from latentwalk.pictures import check_picture

                await asyncio.to_thread(check_picture, path, name)
            else:
                from latentwalk.audio import decode

                samples = await asyncio.to_thread(decode, path, 0.0, 1.0)  # its first second decodes
                if not len(samples):
                    raise BadInput(f"{str(path)!r} holds no sound")
        except BadInput as e:
            path.unlink(missing_ok=True)
            return JSONResponse({"error": str(e).replace(str(path), name)}, status_code=422)
        return {"name": stored}

    return app


def is_video(job: dict) -> bool:
    return job["table"].get("command") != "generate"


def public(job: dict) -> dict:
    """A job as the API shows it. A smooth walk places its frames as it renders, so its frames
    come out late: `renders_done` of at most `renders_most` show its progress before they do."""
    keys = ("id", "state", "frames_done", "frames_total", "renders_done", "renders_most", "outputs", "error", "command")
    return {**{k: job[k] for k in keys}, "job": job["table"]}

