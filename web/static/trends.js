// The analysts' trends: counts per hour or day charted with uPlot, tables
// of response times and outcomes, each exportable as CSV or Excel.
import uPlot from "./vendor/uplot/uPlot.esm.js";
import { api, el, logout } from "./api.js";
import { t, applyI18n, langSwitch } from "./i18n.js";

applyI18n();
langSwitch(load);
document.getElementById("logout").addEventListener("click", logout);
const palette = ["#e0245e", "#f4801f", "#e6c229", "#3fa7d6", "#2eb872", "#a970ff", "#ff6ec7", "#9aa7b4", "#00c2c7", "#c7a500"];
const charts = {};

function exports(kind, q) {
  document.getElementById("x-" + kind).replaceChildren(
    el("a", { href: `/api/trends/${kind}?${q}&format=csv`, download: "" }, t("export_csv")),
    el("a", { href: `/api/trends/${kind}?${q}&format=xlsx`, download: "" }, t("export_xlsx")));
}
// pivot turns rows of (bucket, key, count) into uPlot's columns.
function pivot(tab) {
  const buckets = [...new Set(tab.rows.map((r) => r[0]))].sort();
  const keys = [...new Set(tab.rows.map((r) => r[1]))].sort();
  const idx = new Map(buckets.map((b, i) => [b, i]));
  const series = keys.map(() => buckets.map(() => 0));
  for (const [b, k, n] of tab.rows) series[keys.indexOf(k)][idx.get(b)] = n;
  return { xs: buckets.map((b) => Date.parse(b) / 1000), keys, series };
}
function chart(kind, tab) {
  const box = document.getElementById("c-" + kind);
  if (charts[kind]) charts[kind].destroy();
  const p = pivot(tab);
  const opts = { width: Math.max(300, box.clientWidth || 520), height: 240, tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Asia/Shanghai"),
    series: [{}, ...p.keys.map((k, i) => ({ label: k, stroke: palette[i % palette.length], width: 2 }))],
    axes: [{ stroke: "#8a96a3", grid: { stroke: "#2c3640" } }, { stroke: "#8a96a3", grid: { stroke: "#2c3640" } }] };
  charts[kind] = new uPlot(opts, [p.xs, ...p.series], box);
  box.dataset.rendered = "1";
}
function tableOf(id, tab) {
  document.getElementById(id).replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ...tab.columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, ...tab.rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, String(c))))))));
}
async function load() {
  const bucket = document.getElementById("bucket").value, by = document.getElementById("by").value;
  const q = `bucket=${bucket}`;
  try {
    chart("alerts", await api(`/api/trends/alerts?${q}&by=${by}`)); exports("alerts", `${q}&by=${by}`);
    chart("events", await api(`/api/trends/events?${q}`)); exports("events", q);
    chart("health", await api(`/api/trends/health?${q}`)); exports("health", q);
    tableOf("t-response", await api("/api/trends/response?by=tier")); exports("response", "by=tier");
    tableOf("t-outcomes", await api("/api/trends/outcomes")); exports("outcomes", "");
  } catch (e) { console.error(e); }
}
document.getElementById("bucket").addEventListener("change", load);
document.getElementById("by").addEventListener("change", load);
load();
