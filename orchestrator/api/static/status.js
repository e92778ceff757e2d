// The status page: polls the JSON API with the token kept in sessionStorage; no data in the HTML.
"use strict";
const PREFIX = document.body.dataset.prefix;
const KEY = "drctl-token";
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function say(text, error) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.className = error ? "error" : "";
}

async function call(method, path, body) {
  const token = sessionStorage.getItem(KEY);
  const reply = await fetch(path, {method, headers: {"Authorization": "Bearer " + token,
    "Content-Type": "application/json"}, body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await reply.text();
  let data = text;
  try { data = JSON.parse(text); } catch (e) { /* html or text */ }
  return {status: reply.status, data};
}

function seconds(v) { return v === null || v === undefined ? "-" : Number(v).toFixed(2) + " s"; }

function bytes(v) {
  if (v === null || v === undefined) return "-";
  if (v < 1024) return v + " B";
  if (v < 1048576) return (v / 1024).toFixed(1) + " KiB";
  return (v / 1048576).toFixed(1) + " MiB";
}

async function switchover(cluster, to) {
  say(`switching ${cluster} over to ${to} ...`);
  const r = await call("POST", `${PREFIX}/clusters/${cluster}/switchover`, {to});
  if (r.status === 200) say(`switchover done: primary is now ${r.data.primary || to}`);
  else say(`switchover refused (${r.status}): ${r.data.error || r.data}`, true);
  refresh();
}

async function openReport(run) {
  const r = await call("GET", run.report);
  if (r.status !== 200) { say(`report ${run.run}: ${r.status} ${r.data.error || ""}`, true); return; }
  document.getElementById("report-title").textContent = `Report ${run.run}`;
  document.getElementById("report-frame").srcdoc = r.data;
  document.getElementById("report-view").classList.remove("hidden");
}

function renderClusters(status, overview) {
  const box = document.getElementById("clusters");
  box.replaceChildren();
  const meta = Object.fromEntries(overview.clusters.map(c => [c.cluster, c]));
  for (const c of status.clusters) {
    const info = meta[c.cluster] || {members: [], targets: {}, error_budget: {}};
    const dcOf = Object.fromEntries(info.members.map(m => [m.member, m.datacenter]));
    const section = el("section", {"data-cluster": c.cluster});
    section.append(el("h2", {}, `Cluster ${c.cluster}`));
    section.append(el("p", {}, "Primary: ", el("span", {class: "primary", id: `primary-${c.cluster}`}, c.primary),
      ` · timeline ${c.timeline ?? "-"}` + (c.paused ? " · PAUSED" : "") +
      (c.operation ? ` · operation in progress: ${c.operation.kind} to ${c.operation.target}` : "")));
    if (c.dr_lag) {
      const d = c.dr_lag;
      section.append(el("p", {class: d.over ? "bad" : ""}, `DR lag: ${seconds(d.lag_seconds)} ` +
        `(bound ${d.max_seconds} s, mode ${d.mode})` + (d.over ? " OVER THE BOUND" : "") +
        (d.holding ? " · commits held" : "")));
    }
    const b = info.error_budget;
    if (b && b.budget_s !== undefined) {
      section.append(el("p", {"class": "budget"}, `Error budget (availability ${b.availability_percent} %): ` +
        `${b.used_s} s used of ${b.budget_s} s this year (${b.used_percent} %), ${b.remaining_s} s left, ` +
        `${b.operations} failover(s)/switchover(s)`));
    }
    const rows = c.members.map(m => {
      const button = (m.role !== "primary" && m.health === "healthy" && !c.operation)
        ? el("button", {onclick: () => switchover(c.cluster, m.member), "data-switchover": m.member},
             `Switch over to ${m.member}`) : "";
      return el("tr", {"data-member": m.member},
        el("td", {}, dcOf[m.member] || "-"), el("td", {}, m.member),
        el("td", {class: m.role === "primary" ? "primary role" : "role"}, m.role),
        el("td", {}, m.health), el("td", {}, m.streaming ? "yes" : "-"), el("td", {}, bytes(m.lag_bytes)),
        el("td", {}, String(m.timeline ?? "-")), el("td", {}, button));
    });
    section.append(el("table", {class: "members"},
      el("thead", {}, el("tr", {}, ...["data centre", "member", "role", "health", "streaming", "lag", "timeline",
                                       "action"].map(h => el("th", {}, h)))),
      el("tbody", {}, ...rows)));
    box.append(section);
  }
}

function renderDatacenters(status, overview) {
  const roleOf = {};
  for (const c of status.clusters) for (const m of c.members) roleOf[`${c.cluster}/${m.member}`] = m.role;
  const leaderDc = (status.leader || "").split(":")[0];
  const rows = overview.datacenters.map(dc => {
    const members = overview.clusters.flatMap(c => c.members.filter(m => m.datacenter === dc.datacenter)
      .map(m => `${m.member} (${roleOf[`${c.cluster}/${m.member}`] || "?"})`));
    return el("tr", {"data-dc": dc.datacenter}, el("td", {}, dc.region), el("td", {}, dc.datacenter),
      el("td", {}, members.join(", ")),
      el("td", {}, dc.controller ? (dc.datacenter === leaderDc ? "leader" : "follower") : "-"));
  });
  document.getElementById("datacenters").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ...["region", "data centre", "members (role)", "controller"]
      .map(h => el("th", {}, h)))), el("tbody", {}, ...rows)));
}

function renderRuns(overview) {
  const rows = overview.runs.map(r => r.error ? el("tr", {}, el("td", {}, r.run), el("td", {colspan: "6"}, r.error))
    : el("tr", {"data-run": r.run}, el("td", {}, r.run), el("td", {}, r.drill),
      el("td", {class: r.passed ? "ok" : "bad"}, r.passed ? "passed" : "FAILED"),
      el("td", {class: r.rto_seconds > r.targets.rto_seconds ? "bad" : ""},
         `${seconds(r.rto_seconds)} (${r.targets.rto_seconds} s)`),
      el("td", {class: r.rpo_seconds > r.targets.rpo_seconds ? "bad" : ""},
         `${seconds(r.rpo_seconds)} (${r.targets.rpo_seconds} s)`),
      el("td", {}, String(r.lost)),
      el("td", {}, el("a", {href: r.report, onclick: e => { e.preventDefault(); openReport(r); }}, "report"))));
  document.querySelector("#runs tbody").replaceChildren(...rows);
}

async function refresh() {
  if (!sessionStorage.getItem(KEY)) return;
  try {
    const [s, o] = await Promise.all([call("GET", `${PREFIX}/status`), call("GET", `${PREFIX}/overview`)]);
    if (s.status !== 200 || o.status !== 200) {
      const bad = s.status !== 200 ? s : o;
      say(`status: ${bad.status} ${bad.data.error || ""}`, true);
      if (bad.status === 401) stop();
      return;
    }
    document.getElementById("content").classList.remove("hidden");
    document.getElementById("leader").textContent = s.data.leader || "none";
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    renderClusters(s.data, o.data);
    renderDatacenters(s.data, o.data);
    renderRuns(o.data);
  } catch (e) {
    say(`status: ${e}`, true);
  }
}

function stop() { if (timer) clearInterval(timer); timer = null; }

async function start() {
  const who = await call("GET", `${PREFIX}/whoami`);
  if (who.status !== 200) {
    say(`sign-in failed (${who.status}): ${who.data.error || ""}`, true);
    sessionStorage.removeItem(KEY);
    return;
  }
  document.getElementById("whoami").textContent = `signed in as ${who.data.name} (${who.data.role})`;
  say("");
  stop();
  await refresh();
  timer = setInterval(refresh, 2000);
}

document.getElementById("login").addEventListener("submit", e => {
  e.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  start();
});
document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY); stop();
  document.getElementById("content").classList.add("hidden");
  document.getElementById("whoami").textContent = "";
});
if (sessionStorage.getItem(KEY)) start();
