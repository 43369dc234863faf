// oddeye review: the page. Plain JavaScript, no library, nothing fetched but this server's answers.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  info: null, scores: null, labels: null, sortedScores: null, marks: new Map(),
  sort: "score", filter: "all", page: 0, pages: 1, total: 0, items: [], sel: 0,
  threshold: null, detail: null, version: 0, polling: null, lo: 0, hi: 1, view: null, pageSeq: 0,
};
const BINS = 60;
const W = 720, H = 150, PAD = 18;

async function api(path, options = {}) {
  const init = { ...options, headers: { ...(options.headers || {}) } };
  if (init.body !== undefined) init.headers["Content-Type"] = "application/json";
  const r = await fetch(path, init);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: `${r.status} ${r.statusText}` }; }
  if (!r.ok) {
    const text = [body.error, body.expected && `expected ${body.expected}`, body.found && `found ${body.found}`]
      .filter(Boolean).join("; ");
    throw new Error(text || `${r.status}`);
  }
  return body;
}

function say(text, error = false) {
  const m = $("message");
  m.textContent = text;
  m.hidden = !text;
  m.classList.toggle("error", error);
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(3) : v.toPrecision(4);
}

const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);
const markName = (m) => (m === 0 ? "normal" : m === 1 ? "anomalous" : null);
const isFlagged = (score) => S.threshold !== null && score > S.threshold;

// -- loading ---------------------------------------------------------------------------------
async function loadInfo() {
  S.info = await api("api/info");
  const i = S.info;
  renderAbout();
  const t = i.threshold;
  if (S.threshold === null && t) S.threshold = t.value;
  $("saved").textContent = t ? `run's threshold: ${t.describe}` : "this run has no saved threshold yet";
  const add = $("add-normal");
  add.disabled = i.to_add === 0;
  add.textContent = `add the ${i.to_add} image${i.to_add === 1 ? "" : "s"} marked normal to the model`;
}

function renderAbout() {
  const i = S.info;
  $("about").textContent =
    `${i.n.toLocaleString()} images of ${i.shape.join("×")} from ${i.source} · run ${i.run} (${i.detector})` +
    ` · ${i.marks} marked (${i.marks_file})`;
}

async function loadScores() {
  const body = await api("api/scores");
  S.scores = Float64Array.from(body.scores);
  S.sortedScores = Float64Array.from(body.scores).sort();
  S.labels = body.labels;
  S.marks = new Map(Object.entries(body.marks).map(([k, v]) => [Number(k), v]));
  const n = S.sortedScores.length;
  // the histogram spans the lowest score to the 99.5th percentile (and the saved threshold): a few
  // extreme scores would squash the rest; those above fall in the last bar
  const saved = S.info.threshold ? S.info.threshold.value : -Infinity;
  S.lo = n ? S.sortedScores[0] : 0;
  S.hi = n ? Math.max(S.sortedScores[Math.floor(0.995 * (n - 1))], Math.min(saved, S.sortedScores[n - 1])) : 1;
  S.max = n ? S.sortedScores[n - 1] : 1;
  if (S.hi <= S.lo) S.hi = S.lo + 1;
  if (S.threshold === null) {
    S.threshold = S.info.threshold ? S.info.threshold.value : S.sortedScores[Math.floor(0.95 * (n - 1))];
  }
  drawHistogram();
}

// A listing is frozen on the server when it is made (its "view"): the pages of one listing stay the
// same while images are marked, so marking a page of "not marked" images skips none. A new sort or
// filter, a moved threshold under "flagged", or an update makes a new one.
async function loadPage(keepSelection = false) {
  const asked = performance.now();
  const seq = ++S.pageSeq;
  const selected = S.items[S.sel] ? S.items[S.sel].id : null;
  const params = new URLSearchParams({ sort: S.sort, filter: S.filter, page: String(S.page), thumbs: "true" });
  if (S.filter === "flagged" || S.filter === "unflagged") params.set("threshold", String(S.threshold));
  if (S.view !== null) params.set("view", String(S.view));
  const body = await api(`api/page?${params}`);
  if (seq !== S.pageSeq) return;  // a newer request was made meanwhile
  S.items = body.items;
  S.page = body.page;
  S.pages = body.pages;
  S.total = body.total;
  S.view = body.view;
  const again = keepSelection ? S.items.findIndex((it) => it.id === selected) : -1;
  S.sel = again >= 0 ? again : Math.min(S.sel, Math.max(0, S.items.length - 1));
  renderGrid(asked);
}

function newListing() { S.view = null; S.page = 0; S.sel = 0; return loadPage(); }

// -- the grid --------------------------------------------------------------------------------
function renderGrid(asked = performance.now()) {
  const grid = $("grid");
  grid.dataset.loaded = "";
  grid.replaceChildren(...S.items.map((item, k) => card(item, k)));
  $("pageinfo").textContent =
    `page ${S.page + 1} of ${S.pages} · ${S.total.toLocaleString()} image${S.total === 1 ? "" : "s"}`;
  $("prev").disabled = S.page === 0;
  $("next").disabled = S.page >= S.pages - 1;
  const pending = [...grid.querySelectorAll("img")].map((img) =>
    img.complete ? Promise.resolve() : new Promise((ok) => { img.onload = ok; img.onerror = ok; }));
  const page = S.page;
  Promise.all(pending).then(() => {
    if (S.page !== page) return;
    grid.dataset.ms = String(Math.round(performance.now() - asked));  // the page's request to its last thumbnail
    grid.dataset.sinceStart = String(Math.round(performance.now()));  // since the navigation began
    grid.dataset.loaded = String(page);
  });
}

function card(item, k) {
  const fig = document.createElement("figure");
  fig.className = "card";
  fig.dataset.id = item.id;
  fig.dataset.k = k;
  const img = document.createElement("img");
  if (item.thumb_error) {  // the file went missing or broke after it was scored
    img.alt = item.thumb_error;
    img.title = item.thumb_error;
  } else {
    img.src = item.thumb || `images/${item.id}/thumb?v=${S.info.images_key}`;  // the page's answer carries it
    img.alt = item.path || `image ${item.id}`;
  }
  if (S.info.shape[0] <= 96) img.className = "small";
  fig.append(img);
  const cap = document.createElement("figcaption");
  const cal = item.calibrated === null ? "" : ` · ${pct(item.calibrated)}`;
  const truth = item.label === undefined ? "" :
    `<br><span class="truth">${escapeHtml(item.label ? (item.defect || "anomalous") : "normal")} (label)</span>`;
  cap.innerHTML = `<span class="rank">#${item.rank}</span> <b>${fmt(item.score)}</b>${cal}` +
    `<br><span class="rank">id ${item.id}${item.path ? " · " + escapeHtml(item.path) : ""}</span>${truth}`;
  fig.append(cap);
  fig.addEventListener("click", () => { select(k); openDetail(); });
  decorate(fig, item);
  return fig;
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function decorate(fig, item) {
  fig.classList.toggle("flagged", isFlagged(item.score));
  fig.classList.toggle("selected", Number(fig.dataset.k) === S.sel);
  fig.querySelectorAll(".badge").forEach((b) => b.remove());
  const mark = markName(S.marks.get(item.id));
  if (mark) fig.append(badge(mark, mark));
  if (isFlagged(item.score)) fig.append(badge("flagged", "flag"));
}

function badge(text, kind) {
  const b = document.createElement("span");
  b.className = `badge ${kind}`;
  b.textContent = text;
  return b;
}

function redecorate() {
  document.querySelectorAll("#grid .card").forEach((fig) => decorate(fig, S.items[Number(fig.dataset.k)]));
}

function select(k) {
  S.sel = Math.max(0, Math.min(k, S.items.length - 1));
  redecorate();
  const fig = document.querySelector(`#grid .card[data-k="${S.sel}"]`);
  if (fig) fig.scrollIntoView({ block: "nearest" });
}

async function move(step) {
  const k = S.sel + step;
  if (k >= S.items.length && S.page < S.pages - 1) { S.page += 1; S.sel = 0; await loadPage(true); }
  else if (k < 0 && S.page > 0) { S.page -= 1; S.sel = S.info.page_size - 1; await loadPage(true); }
  else select(k);
  redecorate();
  if (S.detail !== null) await openDetail();
}

// -- marks -----------------------------------------------------------------------------------
async function mark(label) {
  const id = S.detail !== null ? S.detail : (S.items[S.sel] ? S.items[S.sel].id : null);  // what is shown
  if (id === null) return;
  try {
    const r = await api("api/marks", { method: "POST", body: JSON.stringify({ id, label }) });
    S.marks.set(id, r.mark);
    afterMark(r, `marked image ${id} ${label} (saved to ${S.info.marks_file})`);
  } catch (e) { say(`could not mark: ${e.message}`, true); }
}

async function undo() {
  try {
    const r = await api("api/undo", { method: "POST", body: "{}" });
    if (r.mark === null) S.marks.delete(r.id); else S.marks.set(r.id, r.mark);
    afterMark(r, `undone: image ${r.id} is ${markName(r.mark) || "not marked"} again`);
  } catch (e) { say(`nothing undone: ${e.message}`, true); }
}

function afterMark(r, text) {
  if (r.mark === null) S.marks.delete(r.id);
  S.info.marks = r.marks;
  S.info.to_add = r.to_add;
  renderAbout();
  const add = $("add-normal");
  add.disabled = r.to_add === 0;
  add.textContent = `add the ${r.to_add} image${r.to_add === 1 ? "" : "s"} marked normal to the model`;
  redecorate();
  if (S.detail !== null) showFacts();
  say(text);
}

// -- the histogram and the threshold ---------------------------------------------------------
const xOf = (v) => PAD + ((v - S.lo) / (S.hi - S.lo)) * (W - 2 * PAD);
const vOf = (x) => S.lo + ((x - PAD) / (W - 2 * PAD)) * (S.hi - S.lo);

function countAbove(t) {  // scores strictly above t, by binary search in the sorted scores
  const a = S.sortedScores;
  let lo = 0, hi = a.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (a[mid] <= t) lo = mid + 1; else hi = mid; }
  return a.length - lo;
}

function drawHistogram() {
  const svg = $("hist");
  const counts = new Array(BINS).fill(0);
  for (const v of S.scores) counts[Math.max(0, Math.min(BINS - 1, Math.floor(((v - S.lo) / (S.hi - S.lo)) * BINS)))] += 1;
  const top = Math.max(1, ...counts);
  const bw = (W - 2 * PAD) / BINS;
  let html = "";
  counts.forEach((c, b) => {
    const h = c ? Math.max(1, Math.sqrt(c / top) * (H - 2 * PAD)) : 0;  // sqrt: the tail stays visible
    const x0 = PAD + b * bw;
    const over = S.lo + ((b + 0.5) / BINS) * (S.hi - S.lo) > S.threshold;
    html += `<rect class="bar${over ? " over" : ""}" x="${x0}" y="${H - PAD - h}" width="${Math.max(0.5, bw - 1)}" height="${h}"></rect>`;
  });
  const saved = S.info.threshold;
  if (saved) html += `<line class="saved" x1="${xOf(saved.value)}" x2="${xOf(saved.value)}" y1="${PAD / 2}" y2="${H - PAD}"></line>`;
  const x = Math.max(PAD, Math.min(W - PAD, xOf(S.threshold)));
  html += `<line class="line" x1="${x}" x2="${x}" y1="${PAD / 2}" y2="${H - PAD}"></line>`;
  html += `<circle class="handle" id="handle" cx="${x}" cy="${PAD / 2 + 4}" r="7"></circle>`;
  html += `<text x="${PAD}" y="${H - 4}">${fmt(S.lo)}</text>`;
  const top_ = S.max > S.hi ? `${fmt(S.hi)} (last bar: up to ${fmt(S.max)})` : fmt(S.hi);
  html += `<text x="${W - PAD}" y="${H - 4}" text-anchor="end">${top_}</text>`;
  html += `<text x="${W / 2}" y="${PAD / 2 + 4}" text-anchor="middle">score (higher = more anomalous; bar height: √count)</text>`;
  svg.innerHTML = html;
  showCounts();
}

function showCounts() {
  const n = S.scores.length;
  const t = S.threshold;
  const flagged = countAbove(t);
  let text = `flagged ${flagged.toLocaleString()} of ${n.toLocaleString()} (${pct(n ? flagged / n : 0)})`;
  if (S.labels) {
    let tp = 0, fp = 0, pos = 0;
    for (let i = 0; i < n; i++) {
      const over = S.scores[i] > t;
      if (S.labels[i]) { pos += 1; if (over) tp += 1; } else if (over) fp += 1;
    }
    const neg = n - pos;
    const precision = tp + fp ? tp / (tp + fp) : null;
    text += ` · precision ${precision === null ? "–" : precision.toFixed(3)}` +
      ` · recall ${pos ? (tp / pos).toFixed(3) : "–"} · FPR ${neg ? (fp / neg).toFixed(3) : "–"}`;
  }
  $("counts").textContent = text;
  const input = $("threshold");
  if (document.activeElement !== input) input.value = Number(t.toPrecision(6));
  $("hist").dataset.threshold = String(t);
}

let refetch = null;
function setThreshold(t) {
  if (!Number.isFinite(t)) return;
  S.threshold = t;
  drawHistogram();
  redecorate();
  if (S.detail !== null) showFacts();
  if (S.filter === "flagged" || S.filter === "unflagged") {
    clearTimeout(refetch);
    refetch = setTimeout(newListing, 250);
  }
}

function dragHistogram() {
  const svg = $("hist");
  let dragging = false;
  const at = (ev) => {
    const box = svg.getBoundingClientRect();
    return vOf(((ev.clientX - box.left) / box.width) * W);
  };
  svg.addEventListener("pointerdown", (ev) => { dragging = true; svg.setPointerCapture(ev.pointerId); setThreshold(at(ev)); });
  svg.addEventListener("pointermove", (ev) => { if (dragging) setThreshold(at(ev)); });
  svg.addEventListener("pointerup", () => { dragging = false; });
  $("threshold").addEventListener("change", (ev) => {
    if (ev.target.value.trim() !== "") setThreshold(Number(ev.target.value));  // empty: no change
  });
}

async function saveThreshold() {
  try {
    const r = await api("api/threshold", { method: "POST", body: JSON.stringify({ value: S.threshold }) });
    await loadInfo();
    drawHistogram();
    say(`saved into ${r.run}: ${r.threshold.describe}`);
  } catch (e) { say(`threshold not saved: ${e.message}`, true); }
}

// -- the detail view -------------------------------------------------------------------------
async function openDetail() {
  const item = S.items[S.sel];
  if (!item) return;
  S.detail = item.id;
  $("detail").hidden = false;
  const small = S.info.shape[0] <= 96;
  const image = $("d-image");
  image.classList.toggle("small", small);
  image.style.width = image.style.height = "";
  image.src = `images/${item.id}/full?v=${S.info.images_key}`;
  $("d-title").textContent = `image ${item.id}${item.path ? " · " + item.path : ""} · #${item.rank} of ${S.info.n}`;
  delete $("detail").dataset.loaded;
  $("d-map").hidden = true;
  $("d-mask").hidden = true;
  $("d-recon-box").hidden = true;
  showFacts();
  try {
    const d = await api(`api/images/${item.id}`);
    if (S.detail !== item.id) return;  // moved on meanwhile
    const v = `?v=${S.info.run_key}`;
    if (d.map) { $("d-map").src = `images/${item.id}/map${v}`; $("d-map").hidden = false; }
    $("d-opacity-label").hidden = !d.map;
    $("d-mask-label").hidden = !d.mask;
    if (d.mask) {
      $("d-mask").src = `images/${item.id}/mask?v=${S.info.images_key}`;
      $("d-mask").hidden = !$("d-show-mask").checked;
    }
    if (d.recon) {
      $("d-recon").src = `images/${item.id}/recon${v}`;
      $("d-recon").classList.toggle("small", small);
      $("d-recon-box").hidden = false;
    }
    applyOpacity();
    const shown = ["d-image", "d-map", "d-mask", "d-recon"].map($).filter((img) => img.src && !img.hidden);
    await Promise.all(shown.map((img) => img.decode().catch(() => null)));
    fitImage(image);
    if (S.detail === item.id) $("detail").dataset.loaded = String(item.id);
    const next = S.items[S.sel + 1];  // its map is made meanwhile, so that j shows it at once
    if (next && S.detail === item.id) fetch(`api/images/${next.id}`).catch(() => null);
  } catch (e) { say(`could not open image ${item.id}: ${e.message}`, true); }
}

// The picture at a size that fits (small ones enlarged), set on the image itself, so the map and the
// true region, stretched over the stage, lie exactly on it (no letterbox between them).
function fitImage(image) {
  const w = image.naturalWidth, h = image.naturalHeight;
  if (!w || !h) return;
  const scale = Math.min(512 / w, (0.8 * window.innerHeight) / h, (0.6 * window.innerWidth) / w);
  image.style.width = `${Math.round(w * scale)}px`;
  image.style.height = `${Math.round(h * scale)}px`;
}

function showFacts() {
  const item = S.items.find((it) => it.id === S.detail);
  if (!item) return;
  const rows = [
    ["score", fmt(item.score)],
    ["calibrated", item.calibrated === null ? "– (the run has no held-out scores)" :
      `${pct(item.calibrated)} of held-out normal images score lower`],
    ["rank", `${item.rank} of ${S.info.n}`],
    ["flagged", isFlagged(item.score) ? `yes (above ${fmt(S.threshold)})` : `no (threshold ${fmt(S.threshold)})`],
    ["marked", markName(S.marks.get(item.id)) || "not yet"],
  ];
  if (item.label !== undefined) rows.push(["label", item.label ? (item.defect || "anomalous") : "normal"]);
  if (item.added) rows.push(["in the model", "added by this review"]);
  $("d-facts").innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${escapeHtml(String(v))}</td></tr>`).join("");
}

function applyOpacity() { $("d-map").style.opacity = String(Number($("d-opacity").value) / 100); }

function closeDetail() { S.detail = null; $("detail").hidden = true; delete $("detail").dataset.loaded; }

// -- adding the images marked normal ---------------------------------------------------------
async function addNormal() {
  $("add-normal").disabled = true;
  $("save-threshold").disabled = true;  // it would go into the run being replaced
  try {
    await api("api/update", { method: "POST", body: "{}" });
    say("adding the images marked normal to the model…");
    pollJob();
  } catch (e) { say(`not added: ${e.message}`, true); $("add-normal").disabled = false; }
}

async function pollJob() {
  let job;
  try { job = await api("api/job"); } catch (e) { setTimeout(pollJob, 1000); return; }  // try again
  $("save-threshold").disabled = job.state === "running";
  if (job.state === "running") {
    const part = job.total ? ` ${job.done.toLocaleString()} / ${job.total.toLocaleString()}` : "";
    say(`updating the model: ${job.phase}${part} (${job.seconds} s)`);
    setTimeout(pollJob, 400);
    return;
  }
  if (job.state === "failed") { say(`the update failed: ${job.message}`, true); await loadInfo(); return; }
  S.version += 1;
  await loadInfo();
  S.threshold = S.info.threshold ? S.info.threshold.value : S.threshold;
  await loadScores();
  S.view = null;  // the new scores: a new listing
  await loadPage(true);
  say(job.message);
  document.body.dataset.updated = String(S.version);
}

// -- keys and wiring -------------------------------------------------------------------------
function keys(ev) {
  if (ev.target.tagName === "INPUT" && ev.target.type === "number") return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  if (k === "j") move(1);
  else if (k === "k") move(-1);
  else if (k === "n") mark("normal");
  else if (k === "a") mark("anomalous");
  else if (k === "u") undo();
  else if (k === "Enter" || k === "o") openDetail();
  else if (k === "Escape") closeDetail();
  else return;
  ev.preventDefault();
}

async function start() {
  $("sort").addEventListener("change", (ev) => { S.sort = ev.target.value; newListing(); });
  $("filter").addEventListener("change", (ev) => { S.filter = ev.target.value; newListing(); });
  $("prev").addEventListener("click", () => { S.page -= 1; S.sel = 0; loadPage(); });
  $("next").addEventListener("click", () => { S.page += 1; S.sel = 0; loadPage(); });
  $("save-threshold").addEventListener("click", saveThreshold);
  $("add-normal").addEventListener("click", addNormal);
  $("d-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("click", (ev) => { if (ev.target === $("detail")) closeDetail(); });
  $("d-prev").addEventListener("click", () => move(-1));
  $("d-next").addEventListener("click", () => move(1));
  $("d-normal").addEventListener("click", () => mark("normal"));
  $("d-anomalous").addEventListener("click", () => mark("anomalous"));
  $("d-undo").addEventListener("click", undo);
  $("d-opacity").addEventListener("input", applyOpacity);
  $("d-show-mask").addEventListener("change", (ev) => { $("d-mask").hidden = !ev.target.checked; });
  document.addEventListener("keydown", keys);
  dragHistogram();
  try {
    await loadInfo();
    const scores = loadScores();
    await loadPage();
    await scores;
    redecorate();
    if (S.info.resumed) say(`resumed ${S.info.resumed} marks from ${S.info.marks_file}`);
    if (S.info.job === "running") pollJob();  // reloaded during an update: follow it
  } catch (e) { say(`could not load: ${e.message}`, true); }
}

start();
