// The studio page: submit jobs, follow them over Server-Sent Events, show their outputs.
// Its only way in is the job API; the token (if any) travels in the page's cookie.
"use strict";

const rows = new Map();

function shell(argv) {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'")).join(" ");
}

function render(job) {
  let row = rows.get(job.id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.id = job.id;
    document.getElementById("job-rows").prepend(row);
    rows.set(job.id, row);
  }
  const total = job.frames_total || "?";
  const files = job.state === "done"
    ? job.outputs.map((n) => `<a href="/api/jobs/${job.id}/files/${encodeURIComponent(n)}">${n}</a>`).join(" ")
    : "";
  row.innerHTML = `<td>${job.id}</td><td class="state">${job.state}</td>` +
    `<td class="progress">${job.frames_done} / ${total} ${files}</td>` +
    `<td><img class="latest" alt="" src="/api/jobs/${job.id}/files/latest.png?v=${job.frames_done}"></td>` +
    `<td><code class="command"></code></td><td></td>`;
  row.querySelector("code.command").textContent = shell(job.command);
  if (job.state === "queued" || job.state === "running") {
    const cancel = document.createElement("button");
    cancel.textContent = "Cancel";
    cancel.className = "cancel";
    cancel.onclick = () => fetch(`/api/jobs/${job.id}/cancel`, { method: "POST" });
    row.lastElementChild.append(cancel);
  }
}

function follow(id) {
  const events = new EventSource(`/api/jobs/${id}/events`);
  events.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    render(job);
    if (["done", "failed", "cancelled"].includes(job.state)) events.close();
  });
}

async function load() {
  const jobs = await (await fetch("/api/jobs")).json();
  for (const job of jobs) {
    render(job);
    if (job.state === "queued" || job.state === "running") follow(job.id);
  }
}

document.getElementById("submit").onclick = async () => {
  const error = document.getElementById("submit-error");
  error.textContent = "";
  let body;
  try { body = JSON.parse(document.getElementById("job").value); } catch (e) { error.textContent = "not JSON: " + e.message; return; }
  const response = await fetch("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const answer = await response.json();
  if (!response.ok) { error.textContent = answer.error; return; }
  follow(answer.id);
};

load();
