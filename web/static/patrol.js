// The patrol page: the unit's current dispatch, one tap per answer, and
// position reports from the browser's geolocation when allowed.
import { api, el, fmtTime, logout } from "./api.js";
import { t, applyI18n, langSwitch } from "./i18n.js";

let current = null;
let last = null;
applyI18n();
langSwitch(() => render(last));
document.getElementById("logout").addEventListener("click", logout);

function render(v) {
  last = v;
  if (!v) return;
  document.getElementById("unit").textContent = v.unit.id + " · " + v.unit.status;
  const box = document.getElementById("task");
  const d = v.dispatch;
  const open = d && !["cleared", "declined", "reassigned"].includes(d.status);
  current = open ? d : null;
  if (!open) {
    box.replaceChildren(el("p", {}, t("no_dispatch")));
  } else {
    const a = v.alert || {};
    box.replaceChildren(
      el("h2", { id: "task-status" }, t(d.status)),
      el("p", {}, el("span", { class: "sev sev-" + (a.severity || "low") }, t(a.severity || "low")), " ", a.covert ? t("covert") : (a.rule || "")),
      el("p", { id: "task-why" }, t("why") + ": " + (a.summary || "")),
      el("p", {}, t("go_to") + ": " + (a.district || "") + " " + (a.lat || 0).toFixed(5) + ", " + (a.lon || 0).toFixed(5) + " · " + t("eta") + " " + Math.round(d.eta_s) + "s"),
      el("p", { class: "tag" }, fmtTime(d.time) + " · " + d.id));
  }
  for (const b of document.querySelectorAll("[data-status]")) {
    b.disabled = !open;
    b.classList.toggle("current", open && b.dataset.status === d.status);
  }
}
async function refresh() {
  try { render(await api("/api/patrol/current")); document.getElementById("banner").classList.remove("show"); }
  catch (e) { document.getElementById("banner").classList.add("show"); }
}
for (const b of document.querySelectorAll("[data-status]")) {
  b.addEventListener("click", async () => {
    if (!current) return;
    b.disabled = true;
    try { await api("/api/patrol/status", { method: "POST", body: { dispatch_id: current.id, status: b.dataset.status } }); b.classList.add("current"); }
    catch (e) { alert(e.message); }
    finally { b.disabled = false; }
  });
}
if ("geolocation" in navigator) {
  navigator.geolocation.watchPosition(async (p) => {
    const busy = current !== null;
    await api("/api/patrol/position", { method: "POST", body: { lat: p.coords.latitude, lon: p.coords.longitude,
      speed_kmh: Math.max(0, (p.coords.speed || 0) * 3.6), heading_deg: Math.min(360, Math.max(0, p.coords.heading || 0)), status: busy ? "busy" : "available" } }).catch(() => {});
    document.getElementById("pos").textContent = t("position_on") + " " + p.coords.latitude.toFixed(5) + ", " + p.coords.longitude.toFixed(5);
  }, () => { document.getElementById("pos").textContent = t("position_off"); }, { enableHighAccuracy: true, maximumAge: 10000 });
} else {
  document.getElementById("pos").textContent = t("position_off");
}
refresh();
setInterval(refresh, 2000);
