// The studio page: compose a walk from keyframes, preview each keyframe as stills and pick a
// seed, render, follow the job over Server-Sent Events, play the video. Its only way in is the
// job API (a token, if any, travels in the page's cookie); jobs submitted by curl show up too.
"use strict";

const $ = (id) => document.getElementById(id);
const rows = new Map();
const CANDIDATES = 4; // a preview's strip of seeds

function shell(argv) {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'")).join(" ");
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function post(path, job) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(job) });
}

function common() {
  const job = { preset: $("preset").value };
  if ($("model").value.trim()) job.model = $("model").value.trim();
  if ($("steps").value) job.steps = Number($("steps").value);
  return job;
}

// ---- Keyframes ---------------------------------------------------------------------------------

function addKeyframe(prompt = "", seed = 1, frames = 12) {
  const row = document.createElement("tr");
  row.className = "keyframe";
  row.innerHTML =
    '<td class="number"></td><td><input class="prompt"></td>' +
    '<td><input class="seed" type="number" min="0" size="8"></td>' +
    '<td><input class="frames" type="number" min="1" size="5"></td>' +
    '<td><button class="preview">Preview</button> <span class="candidates"></span></td>' +
    '<td><button class="up" title="move up">↑</button><button class="down" title="move down">↓</button>' +
    '<button class="remove" title="remove">✕</button></td>';
  row.querySelector(".prompt").value = prompt;
  row.querySelector(".seed").value = seed;
  row.querySelector(".frames").value = frames;
  row.querySelector(".preview").onclick = () => preview(row);
  row.querySelectorAll("input").forEach((input) => input.addEventListener("change", save));
  row.querySelector(".up").onclick = () => { if (row.previousElementSibling) row.parentNode.insertBefore(row, row.previousElementSibling); number(); };
  row.querySelector(".down").onclick = () => { if (row.nextElementSibling) row.parentNode.insertBefore(row.nextElementSibling, row); number(); };
  row.querySelector(".remove").onclick = () => { row.remove(); number(); };
  $("keyframes").tBodies[0].append(row);
  number();
}

function number() {
  [...document.querySelectorAll("tr.keyframe")].forEach((row, i) => { row.querySelector(".number").textContent = i + 1; });
  save();
}

// The composition survives a reload.
function save() {
  const state = { keyframes: keyframes(), preset: $("preset").value, model: $("model").value, steps: $("steps").value };
  localStorage.setItem("latentwalk-compose", JSON.stringify(state));
}

function keyframes() {
  return [...document.querySelectorAll("tr.keyframe")].map((row) => ({
    prompt: row.querySelector(".prompt").value.trim(),
    seed: Number(row.querySelector(".seed").value),
    frames: Number(row.querySelector(".frames").value),
  }));
}

// A strip of stills for the keyframe's prompt, seeds from its own: `generate` jobs, so the seed
// kept is exactly the walk's keyframe.
async function preview(row) {
  const strip = row.querySelector(".candidates");
  const prompt = row.querySelector(".prompt").value.trim();
  const first = Number(row.querySelector(".seed").value);
  strip.textContent = "";
  if (!prompt) { strip.textContent = "a prompt first"; return; }
  const seeds = [...Array(CANDIDATES).keys()].map((i) => first + i);
  let job;
  try {
    job = await post("/api/jobs", { command: "generate", prompt, seeds: seeds.join(","), ...common() });
  } catch (e) { strip.textContent = e.message; return; }
  follow(job.id, (state) => {
    if (state.state !== "done") return;
    strip.textContent = "";
    state.outputs.forEach((name, i) => {
      const img = document.createElement("img");
      img.src = `/api/jobs/${state.id}/files/${encodeURIComponent(name)}`;
      img.alt = `seed ${seeds[i]}`;
      img.title = `seed ${seeds[i]}`;
      img.dataset.seed = seeds[i];
      if (seeds[i] === first) img.classList.add("chosen");
      img.onclick = () => {
        row.querySelector(".seed").value = seeds[i];
        save();
        strip.querySelectorAll("img").forEach((other) => other.classList.toggle("chosen", other === img));
      };
      strip.append(img);
    });
  });
}

// ---- Rendering and following -------------------------------------------------------------------

async function renderWalk() {
  $("compose-error").textContent = "";
  const keys = keyframes();
  if (keys.length < 2 || keys.some((k) => !k.prompt)) { $("compose-error").textContent = "two keyframes or more, each with a prompt"; return; }
  const prompts = keys.map((k, i) => `${k.prompt.replace(/[|\n]/g, " ")} | seed=${k.seed}` + (i < keys.length - 1 ? ` | frames=${k.frames}` : "")).join("\n") + "\n";
  try {
    const job = await post("/api/jobs", { command: "prompt-walk", prompts, ...common() });
    watchCurrent(job.id);
  } catch (e) { $("compose-error").textContent = e.message; }
}

function watchCurrent(id) {
  localStorage.setItem("latentwalk-current", id); // a reload goes on following it
  $("current").hidden = false;
  $("current-video").hidden = true;
  $("current-latest").hidden = false;
  const started = { time: performance.now(), frames: null };
  follow(id, (job) => {
    $("current-state").textContent = job.state;
    $("current-state").dataset.state = job.state;
    const total = job.frames_total || "?";
    $("current-progress").textContent = `${job.frames_done} / ${total} frames`;
    $("current-progress").dataset.done = job.frames_done;
    if (started.frames === null) started.frames = job.frames_done;
    const made = job.frames_done - started.frames;
    if (job.state === "running" && made > 0 && job.frames_total) {
      const rate = made / ((performance.now() - started.time) / 1000);
      $("current-eta").textContent = `ETA ${Math.round((job.frames_total - job.frames_done) / rate)} s`;
    } else $("current-eta").textContent = "";
    if (job.frames_done > 0) $("current-latest").src = `/api/jobs/${id}/files/latest.png?v=${job.frames_done}`;
    if (job.state === "done") {
      const video = $("current-video");
      video.src = `/api/jobs/${id}/files/${encodeURIComponent(job.outputs[0])}`;
      video.hidden = false;
      $("current-latest").hidden = true;
    }
  });
}

function follow(id, then) {
  const events = new EventSource(`/api/jobs/${id}/events`);
  events.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    renderRow(job);
    if (then) then(job);
    if (["done", "failed", "cancelled"].includes(job.state)) events.close();
  });
}

function renderRow(job) {
  let row = rows.get(job.id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.id = job.id;
    $("job-rows").prepend(row);
    rows.set(job.id, row);
  }
  const files = job.state === "done"
    ? job.outputs.map((n) => `<a href="/api/jobs/${job.id}/files/${encodeURIComponent(n)}">${n}</a>`).join(" ")
    : "";
  row.innerHTML = `<td>${job.id}<br><small>${job.job.command}</small></td><td class="state">${job.state}</td>` +
    `<td class="progress">${job.frames_done} / ${job.frames_total || "?"} ${files}</td>` +
    `<td>${job.frames_done ? `<img class="latest" alt="" src="/api/jobs/${job.id}/files/latest.png?v=${job.frames_done}">` : ""}</td>` +
    `<td><code class="command"></code> <button class="copy">Copy</button></td><td class="actions"></td>`;
  row.querySelector("code.command").textContent = shell(job.command);
  row.querySelector(".copy").onclick = () => navigator.clipboard && navigator.clipboard.writeText(shell(job.command));
  const actions = row.querySelector(".actions");
  if (job.state === "queued" || job.state === "running") {
    const cancel = document.createElement("button");
    cancel.textContent = "Cancel";
    cancel.className = "cancel";
    cancel.onclick = () => api(`/api/jobs/${job.id}/cancel`, { method: "POST" }).then(renderRow).catch(() => {});
    actions.append(cancel);
  } else {
    const again = document.createElement("button");
    again.textContent = "Re-run";
    again.className = "rerun";
    // Again into a new output: the old one stays.
    const { output, ...rest } = job.job;
    again.onclick = () => post("/api/jobs", rest).then((j) => follow(j.id)).catch((e) => { $("compose-error").textContent = e.message; });
    actions.append(again);
  }
}

async function load() {
  const presets = await api("/api/presets");
  for (const name of presets) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    $("preset").append(option);
  }
  $("preset").value = presets.includes("shapes") ? "shapes" : presets[0];
  const saved = JSON.parse(localStorage.getItem("latentwalk-compose") || "null");
  if (saved && saved.keyframes.length) {
    $("preset").value = saved.preset || $("preset").value;
    $("model").value = saved.model || "";
    $("steps").value = saved.steps || "";
    saved.keyframes.forEach((k) => addKeyframe(k.prompt, k.seed, k.frames));
  } else {
    addKeyframe("a large red circle on a blue background", 1, 12);
    addKeyframe("a small yellow square on a gray background", 2, 12);
  }
  for (const id of ["preset", "model", "steps"]) $(id).addEventListener("change", save);
  const jobs = await api("/api/jobs");
  for (const job of jobs) {
    renderRow(job);
    if (job.state === "queued" || job.state === "running") follow(job.id);
  }
  const current = localStorage.getItem("latentwalk-current");
  if (current && jobs.some((j) => j.id === current)) watchCurrent(current);
}

$("add-keyframe").onclick = () => addKeyframe("", keyframes().length + 1, 12);
$("render").onclick = renderWalk;
load();
