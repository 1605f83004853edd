"""The studio's jobs, durable: one SQLite file under --outputs (the standard library's sqlite3).

A job's row holds its table (the JSON that was submitted), its state, progress, outputs and
error. A server killed at any moment and started again finds its running job as it was and
queues it again: the render resumes from the finished renders in its work directory, so it
ends with the same frames.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

STATES = ("queued", "running", "done", "failed", "cancelled")
FIELDS = ("id", "state", "frames_done", "frames_total", "outputs", "error", "command", "table", "created", "updated", "version",
          "renders_done", "renders_most")  # fmt: skip
# The columns by name (the table's is `job`), never by position: an older or newer file's order may differ.
COLUMNS = ", ".join("job" if f == "table" else f for f in FIELDS)
# Columns added since the first studio, with their type: an older jobs.sqlite gets them on opening.
ADDED = {"renders_done": "INTEGER DEFAULT 0", "renders_most": "INTEGER"}


class Store:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "jobs.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (events) never wait on the worker
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, state TEXT, frames_done INTEGER, frames_total INTEGER,"
            " outputs TEXT, error TEXT, command TEXT, job TEXT, created REAL, updated REAL, version INTEGER)"
        )
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # two servers opening one --outputs migrate once
            try:
                present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
                for column, kind in ADDED.items():
                    if column not in present:
                        self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        with self._lock:  # a server that died mid-render: its job is queued again, to resume
            self._db.execute("UPDATE jobs SET state='queued', version=version+1 WHERE state='running'")

    def add(self, table: dict, command: list[str], outputs: list[str], job_id: str | None = None) -> str:
        job_id = job_id or uuid.uuid4().hex[:12]
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, state, frames_done, outputs, command, job, created, updated, version, renders_done)"
                " VALUES (?, 'queued', 0, ?, ?, ?, ?, ?, 0, 0)",
                (job_id, json.dumps(outputs), json.dumps(command), json.dumps(table), now, now),
            )
        return job_id

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else _public(row)

    def all(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(f"SELECT {COLUMNS} FROM jobs ORDER BY created").fetchall()
        return [_public(row) for row in rows]

    def next_queued(self) -> dict | None:
        """The oldest queued job, now running."""
        with self._lock:
            row = self._db.execute(f"SELECT {COLUMNS} FROM jobs WHERE state='queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET state='running', updated=?, version=version+1 WHERE id=?", (time.time(), row[0]))
        return self.get(row[0])

    def update(self, job_id: str, **fields) -> None:
        """Set fields of a job (state, frames_done, frames_total, renders_done, renders_most, outputs,
        error); a cancelled
        job stays cancelled whatever its worker reports after."""
        values = {k: json.dumps(v) if k == "outputs" else v for k, v in fields.items()}
        sets = ", ".join(f"{k}=?" for k in values)
        with self._lock:
            self._db.execute(
                f"UPDATE jobs SET {sets}, updated=?, version=version+1 WHERE id=? AND state!='cancelled'",
                (*values.values(), time.time(), job_id),
            )

    def cancel(self, job_id: str) -> bool:
        """Queued or running: cancelled now (the worker stops at its next frame)."""
        with self._lock:
            done = self._db.execute(
                "UPDATE jobs SET state='cancelled', updated=?, version=version+1 WHERE id=? AND state IN ('queued', 'running')",
                (time.time(), job_id),
            ).rowcount
        return bool(done)


def _public(row) -> dict:
    job = dict(zip(FIELDS, row))
    job["outputs"] = json.loads(job["outputs"] or "[]")
    job["command"] = json.loads(job["command"])
    job["table"] = json.loads(job["table"])
    return job
