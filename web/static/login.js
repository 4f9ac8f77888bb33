import { t, applyI18n, langSwitch } from "./i18n.js";
applyI18n(); langSwitch();
document.getElementById("f").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await fetch("/api/login", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: document.getElementById("name").value, password: document.getElementById("password").value }) });
  if (!r.ok) { document.getElementById("err").textContent = t("login_failed"); return; }
  const next = new URLSearchParams(location.search).get("next");
  location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
});
