// Simplified Chinese by default, English on request (kept in localStorage).
const dict = {
  zh: {
    title_console: "指挥中心 · 实时警情", title_patrol: "巡逻终端", title_trends: "研判分析", title_login: "登录",
    login: "登录", logout: "退出", name: "用户名", password: "密码", login_failed: "用户名或密码错误",
    disconnected: "实时连接已断开，正在重连…", all: "全部", severity: "级别", rule: "规则", district: "区县", circle: "处置圈",
    time: "时间", summary: "摘要", status: "状态", unit: "警力", eta: "预计到达", actions: "操作",
    claim: "认领", ack: "确认", close: "结案", dispatch: "增派警力", mute: "屏蔽", outcome: "结论", note: "备注",
    confirmed: "属实", false_alarm: "误报", duplicate: "重复", evidence: "证据", timeline: "时间线", units: "可用警力",
    raised: "报警", firing: "报警中", updated: "更新", resolved: "解除", assigned: "已派", accepted: "已接受", declined: "已拒绝", en_route: "在途",
    on_scene: "到场", cleared: "处置完毕", reassigned: "改派", escalated: "升级", breached: "超时", claimed: "已认领", acked: "已确认", closed: "已结案",
    critical: "特急", high: "紧急", medium: "一般", low: "提示", select_alert: "选择一条警情查看详情",
    no_dispatch: "当前没有派警任务", go_to: "前往", why: "事由", accept: "接受", enroute: "出发", onscene: "到场", clear: "完毕",
    position: "位置上报", position_on: "已开启定位上报", position_off: "未开启定位（浏览器未授权）", covert: "保密任务",
    alerts_by: "警情数量", events_by: "事件数量（按来源）", response: "响应时间（传感器→到场）", outcomes: "误报率（按规则）",
    health: "设备健康", per_hour: "按小时", per_day: "按天", by_rule: "按规则", by_district: "按区县", by_circle: "按处置圈",
    export_csv: "导出 CSV", export_xlsx: "导出 Excel", age: "位置时效", muted: "已屏蔽", minutes: "分钟", reason: "原因", unmask: "身份核查申请",
  },
  en: {
    title_console: "Command centre · live alerts", title_patrol: "Patrol terminal", title_trends: "Trends", title_login: "Log in",
    login: "Log in", logout: "Log out", name: "Name", password: "Password", login_failed: "Wrong name or password",
    disconnected: "Live connection lost, reconnecting…", all: "All", severity: "Severity", rule: "Rule", district: "District", circle: "Circle",
    time: "Time", summary: "Summary", status: "Status", unit: "Unit", eta: "ETA", actions: "Actions",
    claim: "Claim", ack: "Acknowledge", close: "Close", dispatch: "Dispatch unit", mute: "Mute", outcome: "Outcome", note: "Note",
    confirmed: "Confirmed", false_alarm: "False alarm", duplicate: "Duplicate", evidence: "Evidence", timeline: "Timeline", units: "Units by ETA",
    raised: "raised", firing: "firing", updated: "updated", resolved: "resolved", assigned: "assigned", accepted: "accepted", declined: "declined", en_route: "en route",
    on_scene: "on scene", cleared: "cleared", reassigned: "reassigned", escalated: "escalated", breached: "breached", claimed: "claimed", acked: "acknowledged", closed: "closed",
    critical: "critical", high: "high", medium: "medium", low: "low", select_alert: "Select an alert to see its detail",
    no_dispatch: "No dispatch at the moment", go_to: "Go to", why: "Why", accept: "Accept", enroute: "En route", onscene: "On scene", clear: "Cleared",
    position: "Position", position_on: "Reporting position", position_off: "No position (not allowed by the browser)", covert: "Covert task",
    alerts_by: "Alerts", events_by: "Events by source", response: "Response time (sensor → scene)", outcomes: "False-alarm rate by rule",
    health: "Device health", per_hour: "per hour", per_day: "per day", by_rule: "by rule", by_district: "by district", by_circle: "by circle",
    export_csv: "Export CSV", export_xlsx: "Export Excel", age: "Position age", muted: "muted", minutes: "minutes", reason: "Reason", unmask: "Identity request",
  },
};
export let lang = localStorage.getItem("cw_lang") || "zh";
export function t(key) { return (dict[lang] && dict[lang][key]) || dict.zh[key] || key; }
export function applyI18n(root = document) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}
export function langSwitch(onChange) {
  const b = document.getElementById("lang");
  if (!b) return;
  b.textContent = lang === "zh" ? "English" : "中文";
  b.addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("cw_lang", lang);
    b.textContent = lang === "zh" ? "English" : "中文";
    applyI18n();
    if (onChange) onChange();
  });
}
