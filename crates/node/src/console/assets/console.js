// Bit Mountain web console: reads GET /api/console (format 1, docs/formats.md) every
// REFRESH_MS and draws it. Read-only. Everything from the server is put in the page as text,
// never as markup.
"use strict";

const REFRESH_MS = 10000;
const TOKEN_KEY = "bitmountain.token";
let timer = null;

function $(id) { return document.getElementById(id); }

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function duration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function when(unixMs) {
  if (!unixMs) return "not since its node started";
  return new Date(unixMs).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function stateCell(state) {
  return el("td", state, { "class": "state state-" + state, "data-state": state });
}

// A token given in the address's fragment (#token=...) is taken once and removed from the
// address, so that a link can open the console; the fragment never reaches the server.
function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
}

function showLogin(why) {
  $("login").hidden = false;
  if (why) $("login-why").textContent = why;
  for (const id of ["summary", "repair", "zones", "audit"]) $(id).hidden = true;
  document.body.dataset.state = "login";
}

async function refresh() {
  clearTimeout(timer);
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { "Authorization": "Bearer " + token } : {};
  $("forget").hidden = !token;
  let answer, body;
  try {
    answer = await fetch("api/console", { headers: headers, cache: "no-store" });
    body = await answer.json();
  } catch (e) {
    showError("The node did not answer: " + e);
    timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  if (answer.status === 401 && body.kind === "unauthenticated") {
    showLogin(token ? "The token was refused: " + body.error : null);
    return;
  }
  if (!answer.ok) {
    if (answer.status === 403) showLogin("The token may not see the cluster: " + body.error);
    else showError(body.error || ("HTTP " + answer.status));
    timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  $("login").hidden = true;
  $("error").hidden = true;
  draw(body);
  document.body.dataset.state = "loaded";
  timer = setTimeout(refresh, REFRESH_MS);
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  document.body.dataset.state = "error";
}

function draw(v) {
  $("cluster").textContent = "cluster " + v.cluster_id + " · answered by node " + v.answered_by +
    (v.default_code ? " · default code " + v.default_code : "");
  const p = v.durability_loss_probability_per_year;
  const d = $("durability");
  d.textContent = p > 0 ? p.toExponential(2) : "0";
  d.dataset.value = String(p);
  const b = $("bundles");
  b.textContent = v.bundles.sealed;
  b.dataset.sealed = v.bundles.sealed;
  b.dataset.pending = v.bundles.pending;
  b.dataset.deleting = v.bundles.deleting;
  $("bundles-detail").textContent = "sealed; " + v.bundles.pending + " being written, " +
    v.bundles.deleting + " being deleted" + (v.scoped ? " (only those your token sees)" : "");
  $("leader").textContent = v.leader_id ? "member " + v.leader_id + " leads" : "no leader";
  $("term").textContent = "term " + v.term + (v.leader_address ? " · " + v.leader_address : "");
  const nodes = v.zones.flatMap(z => z.nodes);
  const up = nodes.filter(n => n.state === "up").length;
  $("nodes").textContent = up + " of " + nodes.length + " up";
  const disks = nodes.flatMap(n => n.disks);
  $("disks").textContent = disks.filter(x => x.state === "ok").length + " of " + disks.length +
    " disks ok, in " + v.zones.length + " zone" + (v.zones.length === 1 ? "" : "s");
  $("summary").hidden = false;
  drawRepair(v.repair);
  drawZones(v.zones);
  drawAudit(v.audit);
  $("updated").textContent = "Updated " + when(v.generated_unix_ms) + "; refreshes every " +
    REFRESH_MS / 1000 + " s.";
}

function drawRepair(r) {
  const summary = $("repair-summary");
  const tbody = $("levels").querySelector("tbody");
  tbody.replaceChildren();
  $("repair").hidden = false;
  if (r.shown !== "true") {
    summary.textContent = r.reason;
    $("levels").hidden = true;
    return;
  }
  $("levels").hidden = false;
  summary.dataset.queued = r.queued_bundles;
  summary.textContent = (r.paused ? "Paused. " : "") + r.queued_bundles + " bundles queued, " +
    r.running_shards + " shards being rebuilt, " + bytes(r.queued_bytes) + " left at " +
    bytes(r.bytes_per_sec) + "/s" + (r.eta_ms ? ", about " + duration(r.eta_ms) + " to go" : "") +
    (r.truncated ? " (the queue is larger than was counted)" : "") + ".";
  for (const l of r.levels) {
    const tr = el("tr", null, { "data-healthy": l.healthy_shards });
    tr.append(el("td", l.healthy_shards), el("td", l.bundles));
    tbody.append(tr);
  }
  const tr = el("tr", null, { "data-healthy": "full" });
  tr.append(el("td", "all (k+m)"), el("td", r.full_redundancy_bundles));
  tbody.append(tr);
}

function drawAudit(a) {
  $("audit-note").textContent = a.note;
  const table = $("audit-events");
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  table.hidden = !a.available || a.events.length === 0;
  for (const e of a.events || []) {
    const tr = el("tr", null, { "class": "audit", "data-seq": e.seq, "data-outcome": e.outcome });
    tr.append(el("td", e.seq), el("td", e.time_unix_ms ? when(e.time_unix_ms) : ""),
      el("td", e.agent), el("td", e.action), el("td", e.object),
      el("td", e.outcome, { "class": "outcome outcome-" + e.outcome }), el("td", e.detail));
    tbody.append(tr);
  }
  $("audit").hidden = false;
}

function drawZones(zones) {
  const list = $("zone-list");
  list.replaceChildren();
  for (const z of zones) {
    const div = el("div", null, { "class": "zone", "data-zone": z.zone });
    div.append(el("h3", (z.zone || "(no zone)") + " · " + bytes(z.used_bytes) + " of " +
      bytes(z.capacity_bytes) + " used"));
    const table = el("table");
    const head = el("tr");
    for (const h of ["Node", "State", "Address or path", "Disk", "Disk state", "Fill", "Used", "Last scrub or heartbeat"]) {
      head.append(el("th", h));
    }
    table.append(head);
    for (const n of z.nodes) {
      const tr = el("tr", null, { "class": "node", "data-node-id": n.id, "data-state": n.state });
      tr.append(el("td", n.id), stateCell(n.state), el("td", n.address),
        el("td", ""), el("td", ""), el("td", ""), el("td", ""),
        el("td", n.last_heartbeat_age_ms === null ? "not heard by this leader" :
          "heard " + duration(n.last_heartbeat_age_ms) + " ago"));
      table.append(tr);
      for (const d of n.disks) {
        const dr = el("tr", null, { "class": "disk", "data-disk-id": d.id, "data-node-id": n.id,
          "data-state": d.state });
        const meter = el("meter", null, { min: 0, max: 1, low: 0.8, high: 0.9, optimum: 0,
          value: d.fill.toFixed(4) });
        const fill = el("td");
        fill.append(meter, document.createTextNode(" " + (d.fill * 100).toFixed(1) + " %"));
        dr.append(el("td", ""), el("td", ""), el("td", d.path), el("td", d.id), stateCell(d.state),
          fill, el("td", bytes(d.used_bytes) + " of " + bytes(d.capacity_bytes)),
          el("td", when(d.last_scrub_unix_ms) + (d.last_scrub_damaged_shards ?
            " (" + d.last_scrub_damaged_shards + " damaged)" : "")));
        table.append(dr);
      }
    }
    div.append(table);
    list.append(div);
  }
  $("zones").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  $("login-form").addEventListener("submit", e => {
    e.preventDefault();
    const t = $("token").value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    refresh();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(null);
    $("forget").hidden = true;
  });
  refresh();
});
