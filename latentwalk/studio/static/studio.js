// The studio page: compose a walk from keyframes (placed by frames, seconds or the music's
// beats), preview each keyframe as stills and pick a seed, see the music and where the keyframes
// fall on a timeline, render, follow the job over Server-Sent Events, play the video beside its
// smoothness plot. Its only way in is the job API (a token, if any, travels in the page's
// cookie); jobs submitted by curl show up too.
"use strict";

const $ = (id) => document.getElementById(id);
const rows = new Map(); // job id -> its row in the job list
const followed = new Set(); // job ids with an open event stream
const CANDIDATES = 4; // a preview's strip of seeds
const SNAP = 0.2; // seconds: a click on the timeline this close to a beat lands on it

let music = null; // {name, label}: the uploaded audio file
let heard = null; // what the server heard in it: GET /api/uploads/{name}
let plan = null; // what the composed walk would make: POST /api/check
let selected = null; // the keyframe row a timeline click moves

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

function addKeyframe(prompt = "", seed = 1, frames = 12, at = "", picture = null) {
  const row = document.createElement("tr");
  row.className = "keyframe";
  row.innerHTML =
    '<td class="number"></td><td><input class="prompt"></td>' +
    '<td><input class="seed" type="number" min="0" size="8"></td>' +
    '<td><input class="frames" type="number" min="1" size="5"><input class="at" type="number" min="0" step="0.01" size="6" placeholder="spread">' +
    ' <small class="when"></small></td>' +
    '<td><button class="preview">Preview</button> <span class="candidates"></span></td>' +
    '<td><label class="picture-pick" title="a picture of yours as this keyframe (its inversion); the prompt describes it">' +
    '<input class="picture-file" type="file" accept="image/png,image/jpeg,image/webp"></label>' +
    ' <img class="thumb" alt="" hidden> <span class="picture-name"></span> <button class="picture-clear" hidden title="no picture">✕</button>' +
    ' <small class="picture-error error" role="alert"></small></td>' +
    '<td><button class="up" title="move up">↑</button><button class="down" title="move down">↓</button>' +
    '<button class="remove" title="remove">✕</button></td>';
  row.querySelector(".prompt").value = prompt;
  row.querySelector(".seed").value = seed;
  row.querySelector(".frames").value = frames;
  row.querySelector(".at").value = at;
  row.querySelector(".preview").onclick = () => preview(row);
  showPicture(row, picture);
  row.querySelector(".picture-file").addEventListener("change", (e) => { if (e.target.files[0]) uploadPicture(row, e.target.files[0]); });
  row.querySelector(".picture-clear").onclick = () => { showPicture(row, null); changed(); };
  row.querySelectorAll("input").forEach((input) => input.addEventListener("input", changed));
  row.addEventListener("focusin", () => select(row));
  row.querySelector(".up").onclick = () => { if (row.previousElementSibling) row.parentNode.insertBefore(row, row.previousElementSibling); number(); };
  row.querySelector(".down").onclick = () => { if (row.nextElementSibling) row.parentNode.insertBefore(row.nextElementSibling, row); number(); };
  row.querySelector(".remove").onclick = () => { if (selected === row) selected = null; row.remove(); number(); };
  $("keyframes").tBodies[0].append(row);
  number();
  return row;
}

// A keyframe's picture (image= in the prompts file): uploaded, checked by the server, named by
// its upload. The thumbnail is the browser's own copy of the file.
async function uploadPicture(row, file) {
  row.querySelector(".picture-error").textContent = "";
  try {
    const response = await fetch(`/api/uploads?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    showPicture(row, { name: body.name, label: file.name }, URL.createObjectURL(file));
    changed();
  } catch (e) {
    row.querySelector(".picture-error").textContent = e.message;
  }
}

function showPicture(row, picture, thumb = null) {
  row.picture = picture;
  row.querySelector(".picture-name").textContent = picture ? picture.label : "";
  row.querySelector(".picture-clear").hidden = !picture;
  row.querySelector(".picture-file").value = "";
  const img = row.querySelector(".thumb");
  img.hidden = !(picture && thumb);
  if (picture && thumb) img.src = thumb;
}

function keyframeRows() {
  return [...document.querySelectorAll("tr.keyframe")];
}

function select(row) {
  selected = row;
  keyframeRows().forEach((r) => r.classList.toggle("selected", r === row));
  drawTimeline();
}

// Numbers, and the length column as the placing asks: frames to the next keyframe, a time, or
// nothing (the beats place them). The first keyframe starts the video: its time is 0.
function number() {
  const placing = $("placing").value;
  keyframeRows().forEach((row, i, all) => {
    row.querySelector(".number").textContent = i + 1;
    row.querySelector(".frames").hidden = placing !== "frames" || i === all.length - 1;
    const at = row.querySelector(".at");
    at.hidden = placing !== "seconds";
    at.disabled = i === 0;
    if (i === 0) at.value = "";
    at.placeholder = i === 0 ? "0" : "spread";
  });
  $("length-head").textContent = { frames: "frames to next", seconds: "at (s)", beats: "on the beat" }[placing];
  $("on-beats-label").hidden = placing !== "beats";
  changed();
}

function keyframes() {
  return keyframeRows().map((row) => ({
    prompt: row.querySelector(".prompt").value.trim(),
    seed: Number(row.querySelector(".seed").value),
    frames: Number(row.querySelector(".frames").value),
    at: row.querySelector(".at").value,
    picture: row.picture || null,
  }));
}

// A prompt as one line of a prompts file: no line breaks of any kind (Python's splitlines
// breaks at more than \n), no "|" (it starts the line's options), no leading "#" (a comment).
function oneLine(prompt) {
  return prompt.replace(/[|\r\n\v\f\x1c-\x1e\x85\u2028\u2029]/g, " ").replace(/^[\s#]+/, "").trim();
}

// The walk as a job: a prompt walk whose prompts file is composed here.
function walkJob() {
  const placing = $("placing").value;
  const keys = keyframes();
  const lines = keys.map((k, i) => {
    let line = `${oneLine(k.prompt)} | seed=${k.seed}`;
    if (k.picture) line += ` | image=${k.picture.name}`;
    if (placing === "frames" && i < keys.length - 1) line += ` | frames=${k.frames}`;
    if (placing === "seconds" && i > 0 && k.at !== "") line += ` | at=${Number(k.at)}`;
    return line;
  });
  const job = { command: "prompt-walk", prompts: lines.join("\n") + "\n", ...common() };
  if (music) {
    job.audio = music.name;
    if ($("audio-start").value) job.audio_start = Number($("audio-start").value);
    if ($("audio-duration").value) job.audio_duration = Number($("audio-duration").value);
  }
  if (placing === "beats") job.on_beats = Number($("on-beats").value);
  return job;
}

function composable() {
  const keys = keyframes();
  return keys.length >= 2 && keys.every((k) => oneLine(k.prompt) || k.picture);
}

// The composition survives a reload.
function save() {
  const state = {
    keyframes: keyframes(), preset: $("preset").value, model: $("model").value, steps: $("steps").value,
    placing: $("placing").value, onBeats: $("on-beats").value, music,
    audioStart: $("audio-start").value, audioDuration: $("audio-duration").value,
  };
  localStorage.setItem("latentwalk-compose", JSON.stringify(state));
}

let replanning = null;
function changed() {
  save();
  asked++; // an answer to an earlier composition is stale now
  clearTimeout(replanning);
  replanning = setTimeout(replan, 250);
}

// Ask the server what the walk would make: the same checks as a render, so a mistake shows while
// composing, and the keyframes' times as the walk will place them.
let asked = 0;
async function replan() {
  const ask = ++asked;
  $("compose-error").textContent = "";
  if (!composable()) { plan = null; showPlan(); return; }
  try {
    const answer = await post("/api/check", walkJob());
    if (ask !== asked) return;
    plan = answer;
  } catch (e) {
    if (ask !== asked) return;
    plan = null;
    $("compose-error").textContent = e.message;
  }
  showPlan();
}

function showPlan() {
  const rowsNow = keyframeRows();
  rowsNow.forEach((row, i) => {
    const at = plan && plan.keyframes ? plan.keyframes[i] : undefined;
    row.querySelector(".when").textContent = at === undefined ? "" : `at ${at.toFixed(2)} s`;
  });
  $("plan").textContent = plan && plan.seconds !== undefined
    ? `${plan.frames} frames, ${plan.seconds.toFixed(2)} s at ${plan.fps} fps` + (heard ? ` · ${heard.beats.length} beats` + (heard.tempo ? `, ${heard.tempo} bpm` : "") : "")
    : "";
  if (plan && plan.warnings && plan.warnings.length) $("plan").textContent += " · " + plan.warnings.join(" · ");
  drawTimeline();
}

// ---- The timeline: the music's envelope and beats, and the keyframes on them ----------------

function span() {
  return Math.max(heard ? heard.duration : 0, plan && plan.seconds ? plan.seconds : 0, 1e-6);
}

function drawTimeline() {
  const canvas = $("timeline");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, axis = h - 16;
  const x = (t) => (t / span()) * (w - 2) + 1;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#f6f6f6";
  ctx.fillRect(0, 0, w, axis);
  canvas.dataset.beats = heard ? heard.beats.length : 0;
  canvas.dataset.keyframes = JSON.stringify(plan && plan.keyframes ? plan.keyframes : []);
  if (!heard && !plan) return;
  if (heard) {
    ctx.fillStyle = "#9bb7d4"; // the percussive envelope, as the walk follows it
    heard.envelope.forEach((v, i) => {
      const bar = v * (axis - 4);
      ctx.fillRect(x(i / heard.rate), axis - bar, Math.max(1, x(1 / heard.rate) - x(0)), bar);
    });
    ctx.strokeStyle = "#d08a2c"; // beats
    ctx.lineWidth = 1;
    for (const beat of heard.beats) {
      ctx.beginPath(); ctx.moveTo(x(beat) + 0.5, 0); ctx.lineTo(x(beat) + 0.5, 10); ctx.stroke();
    }
  }
  ctx.fillStyle = "#444"; // seconds along the bottom
  ctx.font = "11px system-ui, sans-serif";
  const step = [0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120].find((s) => span() / s <= 12) || 300;
  for (let t = 0; t <= span() + 1e-9; t += step) ctx.fillText(`${+t.toFixed(2)}s`, Math.min(x(t), w - 30), h - 3);
  if (plan && plan.keyframes) {
    const chosen = keyframeRows().indexOf(selected);
    plan.keyframes.forEach((t, i) => {
      ctx.strokeStyle = ctx.fillStyle = i === chosen ? "#2a6" : "#333";
      ctx.lineWidth = i === chosen ? 3 : 2;
      ctx.beginPath(); ctx.moveTo(x(t), 12); ctx.lineTo(x(t), axis); ctx.stroke();
      ctx.fillText(String(i + 1), Math.min(x(t) + 3, w - 10), 24);
    });
  }
}

// A click puts the selected keyframe (not the first: it starts the video) there, on the nearest
// beat unless shift is held: a time, so the walk is placed by seconds from then on.
function timelineClick(event) {
  const rowsNow = keyframeRows();
  let row = selected && rowsNow.indexOf(selected) > 0 ? selected : rowsNow[1];
  if (!row || (!heard && !plan)) return;
  const canvas = $("timeline");
  const box = canvas.getBoundingClientRect();
  let t = ((event.clientX - box.left) / box.width) * span();
  if (heard && !event.shiftKey && heard.beats.length) {
    const beat = heard.beats.reduce((a, b) => (Math.abs(b - t) < Math.abs(a - t) ? b : a));
    if (Math.abs(beat - t) <= SNAP) t = beat;
  }
  if ($("placing").value !== "seconds") {
    // The other keyframes stay where they are now: their times, as the walk places them.
    if (plan && plan.keyframes) rowsNow.forEach((r, i) => { if (i > 0 && plan.keyframes[i] !== undefined) r.querySelector(".at").value = plan.keyframes[i].toFixed(3); });
    $("placing").value = "seconds";
    number();
  }
  row.querySelector(".at").value = t.toFixed(3);
  select(row);
  changed();
}

// ---- Music ---------------------------------------------------------------------------------------

async function upload(file) {
  $("audio-name").textContent = `uploading ${file.name}…`;
  $("audio-error").textContent = "";
  try {
    const response = await fetch(`/api/uploads?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    music = { name: body.name, label: file.name };
    await listen();
    changed();
  } catch (e) {
    showMusic(); // the music as it was
    $("audio-error").textContent = e.message;
  }
}

// What the server hears in the section: the envelope and beats the walk follows.
async function listen() {
  showMusic();
  if (!music) { heard = null; showPlan(); return; }
  const query = new URLSearchParams();
  if ($("audio-start").value) query.set("start", $("audio-start").value);
  if ($("audio-duration").value) query.set("duration", $("audio-duration").value);
  $("audio-error").textContent = "";
  try {
    heard = await api(`/api/uploads/${encodeURIComponent(music.name)}?${query}`);
  } catch (e) {
    heard = null;
    $("audio-error").textContent = e.message;
  }
  showPlan();
}

function showMusic() {
  $("audio-name").textContent = music ? music.label : "";
  $("audio-clear").hidden = !music;
  document.querySelectorAll(".audio-only").forEach((el) => { el.hidden = !music; });
  $("placing").querySelector("option[value=beats]").disabled = !music;
  if (!music && $("placing").value === "beats") { $("placing").value = "frames"; number(); }
}

// ---- Previews --------------------------------------------------------------------------------

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
    if (state.state === "failed") strip.textContent = state.error;
    if (state.state !== "done") return;
    strip.textContent = "";
    state.outputs.forEach((name, i) => {
      const img = document.createElement("img");
      img.src = `/api/jobs/${state.id}/files/${encodeURIComponent(name)}`;
      img.alt = img.title = `seed ${seeds[i]}`;
      img.dataset.seed = seeds[i];
      if (seeds[i] === first) img.classList.add("chosen");
      img.onclick = () => {
        row.querySelector(".seed").value = seeds[i];
        changed();
        strip.querySelectorAll("img").forEach((other) => other.classList.toggle("chosen", other === img));
      };
      strip.append(img);
    });
  });
}

// ---- Rendering and following -------------------------------------------------------------------

async function renderWalk() {
  $("compose-error").textContent = "";
  if (!composable()) { $("compose-error").textContent = "two keyframes or more, each with a prompt or a picture"; return; }
  try {
    const job = await post("/api/jobs", walkJob());
    watchCurrent(job.id);
  } catch (e) { $("compose-error").textContent = e.message; }
}

// Progress in frames of the video; a smooth walk places its frames as it renders, so before its
// first frames come out it shows its renders (of at most so many).
function progressText(job) {
  const frames = `${job.frames_done} / ${job.frames_total || "?"} frames`;
  if (job.state === "running" && job.renders_done > job.frames_done)
    return `${frames} · ${job.renders_done} renders of at most ${job.renders_most}`;
  return frames;
}

function watchCurrent(id) {
  localStorage.setItem("latentwalk-current", id); // a reload goes on following it
  $("current").hidden = false;
  $("current-video").hidden = true;
  $("current-smoothness").hidden = true;
  $("current-latest").hidden = false;
  const started = { time: performance.now(), renders: null };
  follow(id, (job) => {
    if (localStorage.getItem("latentwalk-current") !== id) return; // another render took the view
    $("current-state").textContent = job.state;
    $("current-state").dataset.state = job.state;
    $("current-progress").textContent = progressText(job);
    $("current-progress").dataset.done = job.frames_done;
    $("current-progress").dataset.renders = job.renders_done;
    if (started.renders === null) started.renders = job.renders_done;
    const made = job.renders_done - started.renders;
    // The ETA by renders, whose rate is steady; a smooth walk's "at most" makes it an upper bound.
    if (job.state === "running" && made > 0 && job.renders_most) {
      const rate = made / ((performance.now() - started.time) / 1000);
      $("current-eta").textContent = `ETA ${job.frames_total && job.renders_most > job.frames_total ? "≤ " : ""}${Math.round((job.renders_most - job.renders_done) / rate)} s`;
    } else $("current-eta").textContent = "";
    if (job.frames_done > 0) $("current-latest").src = `/api/jobs/${id}/files/latest.png?v=${job.frames_done}`;
    if (job.state === "failed") $("current-eta").textContent = job.error;
    if (job.state === "done") {
      const video = $("current-video");
      video.src = `/api/jobs/${id}/files/${encodeURIComponent(job.outputs[0])}`;
      video.hidden = false;
      $("current-latest").hidden = true;
      showSmoothness(id);
    }
  });
}

// inspect's plot and figures of the finished video, beside it.
async function showSmoothness(id) {
  try {
    const figures = await api(`/api/jobs/${id}/smoothness`);
    let text = `change per frame: CV ${figures.cv}, max/mean ${figures.max_over_mean}`;
    if (figures.audio && figures.audio.correlation !== null && figures.audio.correlation !== undefined)
      text += `; follows the music: r = ${figures.audio.correlation}`;
    $("smoothness-figures").textContent = text;
    $("smoothness-plot").src = `/api/jobs/${id}/files/smoothness.png`;
    $("current-smoothness").hidden = false;
  } catch (e) {
    $("smoothness-figures").textContent = e.message;
  }
}

function follow(id, then) {
  followed.add(id);
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
    ? job.outputs.map((n) => `<a href="/api/jobs/${job.id}/files/${encodeURIComponent(n)}"></a>`).join(" ")
    : "";
  row.innerHTML = `<td>${job.id}<br><small class="kind"></small></td><td class="state">${job.state}</td>` +
    `<td class="progress"><span></span> ${files}<div class="error"></div></td>` +
    `<td>${job.frames_done ? `<img class="latest" alt="" src="/api/jobs/${job.id}/files/latest.png?v=${job.frames_done}">` : ""}</td>` +
    `<td><code class="command"></code> <button class="copy">Copy</button></td><td class="actions"></td>`;
  // Text from the job goes in as text, never as markup.
  row.querySelector(".kind").textContent = job.job.command;
  row.querySelector(".progress span").textContent = progressText(job);
  row.querySelectorAll(".progress a").forEach((a, i) => { a.textContent = job.outputs[i]; });
  row.querySelector(".progress .error").textContent = job.error || "";
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

// Jobs from elsewhere (curl, a second tab) appear as they are submitted.
async function poll() {
  try {
    for (const job of await api("/api/jobs")) {
      if (!rows.has(job.id)) renderRow(job);
      if ((job.state === "queued" || job.state === "running") && !followed.has(job.id)) follow(job.id);
    }
  } catch (e) { /* the server restarting: the next poll finds it */ }
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
    $("placing").value = saved.placing || "frames";
    $("on-beats").value = saved.onBeats || 4;
    $("audio-start").value = saved.audioStart || "";
    $("audio-duration").value = saved.audioDuration || "";
    music = saved.music || null;
    saved.keyframes.forEach((k) => addKeyframe(k.prompt, k.seed, k.frames, k.at || "", k.picture || null));
  } else {
    addKeyframe("a large red circle on a blue background", 1, 12);
    addKeyframe("a small yellow square on a gray background", 2, 12);
  }
  for (const id of ["preset", "model", "steps", "on-beats"]) $(id).addEventListener("input", changed);
  $("placing").addEventListener("change", number);
  for (const id of ["audio-start", "audio-duration"]) $(id).addEventListener("change", () => { listen(); changed(); });
  await listen();
  number();
  const jobs = await api("/api/jobs");
  for (const job of jobs) {
    renderRow(job);
    if (job.state === "queued" || job.state === "running") follow(job.id);
  }
  const current = localStorage.getItem("latentwalk-current");
  if (current && jobs.some((j) => j.id === current)) watchCurrent(current);
  setInterval(poll, 3000);
}

$("add-keyframe").onclick = () => addKeyframe("", keyframes().length + 1, 12);
$("render").onclick = renderWalk;
$("timeline").addEventListener("click", timelineClick);
$("audio-file").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
$("audio-clear").onclick = () => { music = null; $("audio-file").value = ""; listen(); changed(); };
load();
