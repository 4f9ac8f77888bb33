// The operator console: the live feed (one row per situation, updated in
// place), filters, the map (no tile server), the alert detail and actions.
import { api, el, fmtTime, logout } from "./api.js";
import { t, applyI18n, langSwitch } from "./i18n.js";

const rows = new Map(); // alert id → row data
let selected = null;
let lastSeq = 0;
let source = null;
const filters = { severity: "", rule: "", district: "", circle: "" };

// tip makes tooltip content a text node: Leaflet would read a string as HTML.
function tip(s) { const e = document.createElement("span"); e.textContent = s; return e; }

applyI18n();
langSwitch(() => { renderAll(); if (selected) showDetail(selected); });
document.getElementById("logout").addEventListener("click", logout);
api("/api/me").then((m) => { document.getElementById("me").textContent = m.name + " · " + m.role; });

// --- sound for critical alerts, generated with WebAudio ---
let audio = null;
function beep() {
  try {
    audio = audio || new AudioContext();
    const o = audio.createOscillator(), g = audio.createGain();
    o.type = "square"; o.frequency.value = 880; g.gain.value = 0.08;
    o.connect(g).connect(audio.destination);
    o.start(); o.frequency.setValueAtTime(660, audio.currentTime + 0.15); o.stop(audio.currentTime + 0.3);
  } catch (e) { /* no audio device */ }
}

function visible(a) {
  return (!filters.severity || a.severity === filters.severity) && (!filters.rule || a.rule.includes(filters.rule)) &&
    (!filters.district || a.district === filters.district) && (!filters.circle || a.circle_id === filters.circle);
}
function statusText(a) {
  if (a.op && a.op.closed) return t("closed") + "·" + t(a.op.closed.outcome);
  const d = (a.dispatches || []).slice(-1)[0];
  const parts = [t(a.status)];
  if (a.op && a.op.acked_by) parts.push(t("acked")); else if (a.op && a.op.claimed_by) parts.push(t("claimed"));
  if (d) parts.push(d.unit_id + " " + t(d.status));
  return parts.join(" · ");
}
function rowEl(a) {
  const tr = el("tr", { class: "alert" + (a.status === "resolved" ? " resolved" : "") + (selected === a.id ? " selected" : ""), "data-id": a.id, onclick: () => showDetail(a.id) },
    el("td", {}, el("span", { class: "sev sev-" + a.severity }, t(a.severity))),
    el("td", {}, fmtTime(a.raised_at)),
    el("td", {}, a.summary, el("div", { class: "tag" }, a.rule + " · " + a.district + " · " + (a.circle_id || ""))),
    el("td", { class: "status" }, statusText(a)));
  return tr;
}
function renderAll() {
  const body = document.getElementById("alerts");
  body.replaceChildren(...[...rows.values()].filter(visible).sort((a, b) => b.raised_at.localeCompare(a.raised_at)).map(rowEl));
  drawAlerts();
}
function upsert(a) {
  const isNew = !rows.has(a.id);
  rows.set(a.id, a);
  const body = document.getElementById("alerts");
  const old = body.querySelector(`tr[data-id="${CSS.escape(a.id)}"]`);
  if (!visible(a)) { if (old) old.remove(); return; }
  const tr = rowEl(a);
  if (old) old.replaceWith(tr); else body.prepend(tr);
  if (isNew && a.severity === "critical" && a.status === "firing") beep();
  drawAlerts();
  if (selected === a.id) showDetail(a.id);
}

for (const k of Object.keys(filters)) {
  const input = document.getElementById("f-" + k);
  input.addEventListener("input", () => { filters[k] = input.value.trim(); renderAll(); });
}

// --- the feed: list first, then SSE from the list's position ---
// While the list loads (after a resync), the feed goes on: its frames are
// held and applied on top of the list, those the list does not include
// yet (after its feed_seq), so that none is lost to the reload. Loads run
// one after another: a second resync during a load waits for it, so that
// one load's end does not apply the other's frames or drop them.
let held = null;
let loading = Promise.resolve(0);
function reload() {
  loading = loading.catch(() => 0).then(load);
  return loading;
}
async function load() {
  held = [];
  try {
    const list = await api("/api/alerts?limit=500");
    rows.clear();
    for (const a of list.alerts) rows.set(a.id, a);
    renderAll();
    for (const f of held) if (f.seq > list.feed_seq) upsert(f.alert);
    return list.feed_seq;
  } finally {
    held = null;
  }
}
function connect(after) {
  if (source) source.close();
  source = new EventSource("/api/feed?last_event_id=" + after);
  source.addEventListener("open", () => document.getElementById("banner").classList.remove("show"));
  source.addEventListener("error", () => document.getElementById("banner").classList.add("show"));
  source.addEventListener("alert", (ev) => {
    lastSeq = Number(ev.lastEventId);
    const a = JSON.parse(ev.data);
    if (held) held.push({ seq: lastSeq, alert: a }); else upsert(a);
  });
  source.addEventListener("resync", async () => {
    try { const seq = await reload(); lastSeq = Math.max(lastSeq, seq); } catch (e) { console.error(e); }
  });
}

// --- the map ---
const map = L.map("map", { zoomControl: true, attributionControl: false, preferCanvas: true }).setView([32.05, 112.14], 9);
const layers = { districts: L.layerGroup().addTo(map), density: L.layerGroup(), circles: L.layerGroup().addTo(map),
  checkpoints: L.layerGroup().addTo(map), units: L.layerGroup().addTo(map), alerts: L.layerGroup().addTo(map) };
L.control.layers(null, { "区县 districts": layers.districts, "摄像头密度 camera density": layers.density, "处置圈 circles": layers.circles,
  "卡口 checkpoints": layers.checkpoints, "警力 units": layers.units, "警情 alerts": layers.alerts }).addTo(map);
api("/api/city/districts").then((fc) => {
  const g = L.geoJSON(fc, { style: { color: "#6c8aa6", weight: 1, fillOpacity: 0.05 } }).addTo(layers.districts);
  g.eachLayer((l) => l.bindTooltip(tip(l.feature.properties.name)));
  map.fitBounds(g.getBounds());
});
api("/api/devices?layer=density&cell=0.01").then((d) => {
  const max = Math.max(1, ...d.cells.map((c) => c.count));
  for (const c of d.cells) {
    L.rectangle([[c.lat, c.lon], [c.lat + d.cell_deg, c.lon + d.cell_deg]], { stroke: false, fillColor: "#ff7b00", fillOpacity: 0.1 + 0.7 * c.count / max })
      .bindTooltip(tip(String(c.count))).addTo(layers.density);
  }
});
api("/api/devices?kind=checkpoint").then((d) => {
  for (const c of d.devices) L.circleMarker([c.lat, c.lon], { radius: 3, color: "#9aa7b4", weight: 1 }).bindTooltip(tip(c.id + " " + c.class)).addTo(layers.checkpoints);
});
async function drawCircles() {
  const d = await api("/api/circles");
  layers.circles.clearLayers();
  for (const c of d.circles) {
    const color = c.coverage.covered ? "#2eb872" : "#e0245e";
    L.circle([c.lat, c.lon], { radius: c.radius_m, color, weight: 1, fillOpacity: 0.08 })
      .bindTooltip(tip(`${c.name} · ${c.tier_minutes} min · ${c.coverage.available_units} · ETA ${c.coverage.best_eta_s}s`)).addTo(layers.circles);
  }
}
async function drawUnits() {
  const d = await api("/api/units");
  layers.units.clearLayers();
  for (const u of d.units) {
    const color = u.stale ? "#777" : u.dispatch && !["cleared", "declined", "reassigned"].includes(u.dispatch.status) ? "#f4801f" : "#2eb872";
    const age = u.position_age_s < 0 ? "—" : u.position_age_s + "s";
    L.circleMarker([u.lat, u.lon], { radius: 5, color, fillOpacity: 0.9 })
      .bindTooltip(tip(`${u.id} · ${u.status} · ${t("age")} ${age}` + (u.dispatch ? ` · ${t(u.dispatch.status)}` : ""))).addTo(layers.units);
  }
}
function drawAlerts() {
  layers.alerts.clearLayers();
  for (const a of rows.values()) {
    if (!visible(a) || a.status === "resolved" || (a.op && a.op.closed)) continue;
    const color = { critical: "#e0245e", high: "#f4801f", medium: "#e6c229", low: "#3fa7d6" }[a.severity];
    L.circleMarker([a.lat, a.lon], { radius: 7, color, weight: 2, fillOpacity: 0.5 }).bindTooltip(tip(a.summary))
      .on("click", () => showDetail(a.id)).addTo(layers.alerts);
  }
}
setInterval(() => { drawUnits(); drawCircles(); }, 5000);
drawUnits(); drawCircles();

// --- detail and actions ---
async function act(id, what, body) {
  try { await api(`/api/alerts/${encodeURIComponent(id)}/${what}`, { method: "POST", body: body || {} }); showDetail(id); }
  catch (e) { alert(e.message); }
}
async function showDetail(id) {
  selected = id;
  for (const tr of document.querySelectorAll("tr.alert")) tr.classList.toggle("selected", tr.dataset.id === id);
  const d = await api("/api/alerts/" + encodeURIComponent(id));
  const a = d.alert;
  const box = document.getElementById("detail");
  const outcome = el("select", { id: "outcome" }, ...["confirmed", "false_alarm", "duplicate"].map((o) => el("option", { value: o }, t(o))));
  const note = el("input", { id: "note", placeholder: t("note"), size: 20 });
  const unitSel = el("select", { id: "unit" }, ...d.units.map((u) => el("option", { value: u.id }, `${u.id} · ${u.eta_s}s · ${u.available ? "✓" : u.status}`)));
  const detailsKV = Object.entries(a.details || {}).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, Array.isArray(v) ? v.join(", ") : String(v))]);
  box.replaceChildren(
    el("h2", {}, el("span", { class: "sev sev-" + a.severity }, t(a.severity)), " ", a.summary),
    el("dl", { class: "kv" }, el("dt", {}, t("rule")), el("dd", {}, a.rule), el("dt", {}, t("district")), el("dd", {}, a.district + " · " + a.circle_id + " · " + a.tier_minutes + " min"),
      el("dt", {}, "subject"), el("dd", {}, a.subject.kind + " " + a.subject.id), ...detailsKV,
      el("dt", {}, t("evidence")), el("dd", {}, a.evidence.join(", "))),
    el("div", { class: "actions" },
      el("button", { id: "btn-claim", onclick: () => act(id, "claim") }, t("claim")),
      el("button", { id: "btn-ack", class: "primary", onclick: () => act(id, "ack") }, t("ack")),
      outcome, note, el("button", { id: "btn-close", onclick: () => act(id, "close", { outcome: outcome.value, note: note.value }) }, t("close")),
      unitSel, el("button", { id: "btn-dispatch", onclick: () => act(id, "dispatch", { unit_id: unitSel.value }) }, t("dispatch")),
      el("button", { id: "btn-mute", onclick: () => muteIt(a) }, t("mute") + " 30 " + t("minutes"))),
    el("h3", {}, t("timeline")),
    el("ul", { class: "timeline" }, ...d.timeline.map((e) => el("li", {}, `${fmtTime(e.time)} ${t(e.what)} ${e.unit || ""} ${e.by || ""} ${e.note ? t(e.note) : ""}`))),
    el("h3", {}, t("units")),
    el("table", {}, el("tbody", {}, ...d.units.map((u) => el("tr", {}, el("td", {}, u.id), el("td", {}, u.status), el("td", {}, t("eta") + " " + u.eta_s + "s"),
      el("td", {}, u.position_age_s < 0 ? "—" : u.position_age_s + "s"))))));
}
async function muteIt(a) {
  const body = a.subject.kind === "device" ? { rule: a.rule, device: a.subject.id, minutes: 30, reason: "console" } : { rule: a.rule, area: a.district, minutes: 30, reason: "console" };
  try { await api("/api/mutes", { method: "POST", body }); rows.delete(a.id); renderAll(); } catch (e) { alert(e.message); }
}

reload().then((seq) => { lastSeq = seq; connect(seq); }).catch((e) => console.error(e));
