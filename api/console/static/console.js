// Vigil operator console: one ES module, no build step, no third-party code.
// The server renders each page with its first data embedded (#initial-data); this module
// keeps it live over the API's SSE stream and sends actions to the JSON API with the
// session's CSRF token. Every rule about who may see or do what is the server's: the
// script only hides what the server would refuse anyway.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
const body = document.body;
const canAct = body.dataset.canAct === "true";
const ALERT_EVENTS = ["AlertRaised", "AlertRepeated", "AlertEscalated", "AlertAcknowledged",
  "AlertResolved", "CommandRejected", "AlertAssigned", "AlertCommented"];
const OPEN_STATES = new Set(["NEW", "ESCALATED"]);
// How long after an alert is raised the queue keeps asking for its missing picture.
const PICTURE_PATIENCE_MS = 10 * 60 * 1000;
const RESOLUTIONS = [["true_alarm", "true alarm"], ["false_alarm", "false alarm"],
  ["duplicate", "duplicate"]];

export function initialData() {
  const el = document.getElementById("initial-data");
  return el ? JSON.parse(el.textContent) : null;
}

export async function api(method, path, payload) {
  const headers = { "Accept": "application/json" };
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  if (res.status === 401) { window.location.assign("/console/login?next=" +
    encodeURIComponent(location.pathname + location.search)); throw new Error("logged out"); }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { const err = new Error(data.message || res.statusText); err.status = res.status;
    err.data = data; throw err; }
  return data;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
export function localTime(iso) { return iso ? timeFmt.format(new Date(iso)) : "—"; }
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}:${String(r).padStart(2, "0")}`;
}
/** The queue's picture of an alert: the console redirects to its evidence thumbnail. */
function thumbOf(a) {
  return `/console/alerts/${encodeURIComponent(a.alert_id)}/thumbnail`;
}

// ---------------------------------------------------------------------------- live stream
function liveStream(onEvent, indicator) {
  const source = new EventSource("/api/v1/alerts/stream");
  source.onopen = () => { if (indicator) { indicator.dataset.state = "live";
    indicator.textContent = "live"; } };
  source.onerror = () => { if (indicator) { indicator.dataset.state = "reconnecting";
    indicator.textContent = "reconnecting…"; } };
  for (const type of ALERT_EVENTS) {
    source.addEventListener(type, (ev) => onEvent(type, JSON.parse(ev.data)));
  }
  source.addEventListener("reset", () => window.location.reload());
  // the session ran out: the server closed the stream; reloading leads to the login page
  source.addEventListener("credential_expired", () => { source.close();
    window.location.reload(); });
  return source;
}

// ---------------------------------------------------------------------------- queue page
function queuePage() {
  const data = initialData() || { items: [] };
  const alerts = new Map(data.items.map((a) => [a.alert_id, a]));
  const rules = new Map();
  const selected = new Set();
  const noPicture = new Map();
  const tbody = document.querySelector("#alerts tbody");
  const filters = document.getElementById("filters");
  const banner = document.getElementById("critical-banner");
  let stateTab = "open";
  let cursor = 0;
  let visible = [];
  const seenCritical = new Set([...alerts.values()].filter((a) => a.severity === "critical")
    .map((a) => a.alert_id));

  function nextEscalation(a) {
    const rule = rules.get(a.rule_id);
    // escalation_s null: the site-wide policy (VIGIL_ALERTS_*) applies, which the console
    // does not know, so no countdown rather than a wrong one
    if (!OPEN_STATES.has(a.state) || !rule || rule.escalation_s == null) return null;
    if (rule.max_escalation_level != null && a.level >= rule.max_escalation_level) return null;
    const from = new Date(a.escalated_at || a.raised_at).getTime();
    return from + rule.escalation_s * 1000;
  }

  function matchesFilters(a, ignoreState) {
    const f = new FormData(filters);
    const sev = f.getAll("severity");
    if (!sev.includes(a.severity)) return false;
    if (f.get("site") && a.site_id !== f.get("site")) return false;
    if (f.get("camera") && a.camera_id !== f.get("camera")) return false;
    if (f.get("rule_type") && a.rule_type !== f.get("rule_type")) return false;
    const since = Number(f.get("since") || 0);
    if (since && Date.now() - new Date(a.raised_at).getTime() > since * 1000) return false;
    if (ignoreState) return true;
    if (stateTab === "open") return OPEN_STATES.has(a.state);
    if (stateTab === "all") return true;
    return a.state === stateTab;
  }

  function fillSelect(name, values) {
    const select = filters.elements[name];
    const current = select.value;
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of [...values].sort()) {
      if (v && !have.has(v)) select.append(el("option", { value: v, text: v }));
    }
    select.value = current;
  }

  function counts() {
    const base = [...alerts.values()].filter((a) => matchesFilters(a, true));
    const n = { open: 0, ACKNOWLEDGED: 0, RESOLVED: 0, all: base.length };
    for (const a of base) { if (OPEN_STATES.has(a.state)) n.open++; if (a.state in n) n[a.state]++; }
    const bySev = { critical: 0, warning: 0, info: 0 };
    for (const a of alerts.values()) {
      if (a.severity in bySev && (stateTab === "all" || (stateTab === "open"
        ? OPEN_STATES.has(a.state) : a.state === stateTab))) bySev[a.severity]++;
    }
    for (const [k, v] of Object.entries({ ...n, ...bySev })) {
      const c = document.querySelector(`[data-count="${k}"]`);
      if (c) c.textContent = String(v);
    }
  }

  function row(a, index) {
    const thumb = thumbOf(a);
    const tr = el("tr", { class: `alert-row sev-${a.severity} state-${a.state}`,
      "data-alert-id": a.alert_id, "data-state": a.state, tabIndex: -1 });
    if (index === cursor) tr.classList.add("cursor");
    if (selected.has(a.alert_id)) tr.classList.add("selected");
    if (a._fresh) tr.classList.add("fresh");
    const box = el("input", { type: "checkbox", checked: selected.has(a.alert_id),
      "aria-label": `select alert ${a.rule_type} on ${a.camera_id}` });
    box.addEventListener("change", () => { toggle(a.alert_id, box.checked); });
    const due = nextEscalation(a);
    tr.append(
      el("td", {}, box),
      el("td", { class: "thumb" }, thumbImage(a, thumb)),
      el("td", {}, el("span", { class: `sev-badge sev-${a.severity}`, text: a.severity })),
      el("td", {}, el("a", { href: `/console/alerts/${encodeURIComponent(a.alert_id)}`,
        text: a.rule_type })),
      el("td", { text: a.camera_id + (a.site_id ? ` (${a.site_id})` : "") }),
      el("td", {}, el("time", { dateTime: a.raised_at, text: localTime(a.raised_at) })),
      el("td", { class: "state", "data-field": "state", text: a.state +
        (a.acknowledged_by ? ` · ${a.acknowledged_by}` : "")
        + (a.assigned_to ? ` → ${a.assigned_to}` : "") }),
      el("td", { class: "countdown", "data-due": due ?? "" }, due ? duration((due - Date.now()) / 1000) : "—"),
    );
    tr.addEventListener("click", (ev) => {
      if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLAnchorElement) return;
      cursor = index; render();
    });
    return tr;
  }

  function thumbImage(a, src) {
    // An alert's picture usually lands a few seconds after the alert (the evidence agent
    // renders it, the projector folds it), and no alert event announces it. A missing
    // picture shows a label and is asked for again with a growing pause while the alert
    // is young; an alert event (new version) asks at once.
    const miss = noPicture.get(a.alert_id);
    const same = miss && miss.version === a.version;
    if (same && miss.waiting) return el("span", { class: "no-thumb", text: "no picture" });
    const tries = same ? miss.tries : 0;
    const img = el("img", { src: `${src}?v=${a.version}.${tries}`, alt: `snapshot of ${a.camera_id}`,
      loading: "lazy", width: 96, height: 54, class: "thumb-img" });
    img.addEventListener("error", () => {
      const entry = { version: a.version, tries: tries + 1, waiting: true };
      noPicture.set(a.alert_id, entry);
      img.replaceWith(el("span", { class: "no-thumb", text: "no picture" }));
      const age = Date.now() - new Date(a.raised_at).getTime();
      if (age > PICTURE_PATIENCE_MS) return;
      setTimeout(() => {
        if (noPicture.get(a.alert_id) !== entry) return;
        entry.waiting = false;
        render();
      }, Math.min(2000 * 2 ** tries, 30000));
    });
    return img;
  }

  function render() {
    fillSelect("site", new Set([...alerts.values()].map((a) => a.site_id).filter(Boolean)));
    fillSelect("camera", new Set([...alerts.values()].map((a) => a.camera_id)));
    fillSelect("rule_type", new Set([...alerts.values()].map((a) => a.rule_type)));
    visible = [...alerts.values()].filter((a) => matchesFilters(a, false))
      .sort((x, y) => (y.raised_at > x.raised_at ? 1 : y.raised_at < x.raised_at ? -1
        : (y.alert_id > x.alert_id ? 1 : -1)));
    cursor = Math.min(cursor, Math.max(0, visible.length - 1));
    tbody.replaceChildren(...visible.map(row));
    document.getElementById("empty").hidden = visible.length > 0;
    for (const b of document.querySelectorAll(".tabs [role=tab]")) {
      b.setAttribute("aria-selected", String(b.dataset.state === stateTab));
    }
    const bulk = document.getElementById("bulk");
    if (bulk) { bulk.hidden = selected.size === 0;
      document.getElementById("selected-count").textContent = String(selected.size); }
    counts();
    const current = tbody.children[cursor];
    if (current && document.activeElement?.closest?.("#alerts")) current.focus();
  }

  function toggle(id, on) { if (on) selected.add(id); else selected.delete(id); render(); }

  function targets() {
    if (selected.size) return [...selected].map((id) => alerts.get(id)).filter(Boolean);
    return visible[cursor] ? [visible[cursor]] : [];
  }

  async function refresh(id) {
    try {
      const a = await api("GET", `/api/v1/alerts/${encodeURIComponent(id)}`);
      const old = alerts.get(id);
      alerts.set(id, { ...a, _fresh: !old });
      return a;
    } catch (err) { if (err.status === 404) alerts.delete(id); return null; }
  }

  async function act(kind, list, resolution) {
    for (const a of list) {
      const path = `/api/v1/alerts/${encodeURIComponent(a.alert_id)}/${kind}?wait=10`;
      const payload = kind === "ack" ? { note: "" } : { resolution };
      try {
        await api("POST", path, payload);
      } catch (err) { flash(`${a.rule_type} on ${a.camera_id}: ${err.message}`); }
      await refresh(a.alert_id);
    }
    selected.clear();
    render();
  }

  function flash(text) {
    banner.textContent = text; banner.hidden = false; banner.classList.add("notice");
    setTimeout(() => { banner.hidden = true; banner.classList.remove("notice"); }, 6000);
  }

  function announceCritical(a) {
    banner.replaceChildren(el("strong", { text: "New critical alert: " }),
      el("a", { href: `/console/alerts/${encodeURIComponent(a.alert_id)}`,
        text: `${a.rule_type} on ${a.camera_id}` }));
    banner.hidden = false;
    banner.classList.add("flashing");
    document.title = `(!) Critical alert · Vigil`;
    if (new FormData(filters).get("sound")) beep();
  }

  function chooseResolution() {
    return new Promise((resolve) => {
      const dialog = el("dialog", { class: "resolve-dialog" },
        el("p", { text: "Resolve as:" }),
        ...RESOLUTIONS.map(([value, label], i) => {
          const b = el("button", { type: "button", text: `${i + 1} ${label}` });
          b.addEventListener("click", () => { dialog.close(); resolve(value); });
          return b;
        }),
        (() => { const b = el("button", { type: "button", text: "Esc cancel" });
          b.addEventListener("click", () => { dialog.close(); resolve(null); }); return b; })());
      dialog.addEventListener("keydown", (ev) => {
        const n = Number(ev.key);
        if (n >= 1 && n <= RESOLUTIONS.length) { ev.preventDefault(); dialog.close();
          resolve(RESOLUTIONS[n - 1][0]); }
      });
      dialog.addEventListener("cancel", () => resolve(null));
      dialog.addEventListener("close", () => dialog.remove());
      document.body.append(dialog);
      dialog.showModal();
    });
  }

  document.addEventListener("keydown", async (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement
      || ev.target instanceof HTMLTextAreaElement || document.querySelector("dialog[open]")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "j" || ev.key === "ArrowDown") { cursor = Math.min(cursor + 1, visible.length - 1); render(); tbody.children[cursor]?.focus(); ev.preventDefault(); }
    else if (ev.key === "k" || ev.key === "ArrowUp") { cursor = Math.max(cursor - 1, 0); render(); tbody.children[cursor]?.focus(); ev.preventDefault(); }
    else if (ev.key === "Enter" && visible[cursor]) { window.location.assign(`/console/alerts/${encodeURIComponent(visible[cursor].alert_id)}`); }
    else if (ev.key === "x" && visible[cursor]) { toggle(visible[cursor].alert_id, !selected.has(visible[cursor].alert_id)); }
    else if (ev.key === "a" && canAct) { ev.preventDefault(); await act("ack", targets().filter((a) => OPEN_STATES.has(a.state))); }
    else if (ev.key === "r" && canAct) {
      ev.preventDefault();
      const list = targets().filter((a) => a.state !== "RESOLVED");
      if (!list.length) return;
      const resolution = await chooseResolution();
      if (resolution) await act("resolve", list, resolution);
    }
  });
  for (const b of document.querySelectorAll(".tabs [role=tab]")) {
    b.addEventListener("click", () => { stateTab = b.dataset.state; cursor = 0; render(); });
  }
  filters.addEventListener("change", () => { cursor = 0; render(); });
  for (const b of document.querySelectorAll("[data-bulk]")) {
    b.addEventListener("click", async () => {
      if (b.dataset.bulk === "ack") await act("ack", targets());
      else { const r = await chooseResolution(); if (r) await act("resolve", targets(), r); }
    });
  }

  liveStream(async (type, msg) => {
    if (!msg.alert_id) return;
    const a = await refresh(msg.alert_id);
    if (a && type === "AlertRaised" && a.severity === "critical" && !seenCritical.has(a.alert_id)) {
      seenCritical.add(a.alert_id);
      announceCritical(a);
    }
    render();
  }, document.getElementById("live"));

  api("GET", "/api/v1/rules?limit=500").then((page) => {
    for (const r of page.items || []) rules.set(r.rule_id, r);
    render();
  }).catch(() => {});
  setInterval(() => {
    for (const td of tbody.querySelectorAll("td.countdown[data-due]")) {
      const due = Number(td.dataset.due);
      if (due) td.textContent = due > Date.now() ? duration((due - Date.now()) / 1000) : "due";
    }
  }, 1000);
  render();
  // When the rows are on screen and the keys work: the browser test logs it (first paint).
  performance.mark("vigil:queue-usable");
}

function beep() {
  try {
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    osc.frequency.value = 880; osc.connect(ctx.destination); osc.start();
    setTimeout(() => { osc.stop(); ctx.close(); }, 400);
  } catch { /* sound is optional */ }
}

// ---------------------------------------------------------------------------- alert page
function alertPage() {
  let alert = initialData();
  const result = document.getElementById("action-result");

  let shownEvidence = "";

  function clipPlayer(item) {
    const video = el("video", { src: item.clip_url, controls: true, muted: true,
      preload: "auto", playsInline: true, class: "clip", "data-testid": "clip" });
    const wrap = el("div", { class: "clip-wrap" }, video);
    const start = item.clip_start_at ? new Date(item.clip_start_at).getTime() : null;
    const end = item.clip_end_at ? new Date(item.clip_end_at).getTime() : null;
    const trigger = new Date(item.frame_at).getTime();
    if (start !== null && end !== null && end > start) {
      const at = Math.min(1, Math.max(0, (trigger - start) / (end - start)));
      const bar = el("div", { class: "clip-bar", title: "the trigger moment" },
        el("span", { class: "trigger-mark", "data-testid": "trigger-mark" }));
      bar.firstChild.style.left = `${(at * 100).toFixed(2)}%`;
      const jump = el("button", { type: "button", text: "Jump to the trigger moment" });
      jump.addEventListener("click", () => { video.currentTime = (trigger - start) / 1000;
        video.play().catch(() => {}); });
      wrap.append(bar, jump);
    }
    if (item.clip_status === "partial") {
      wrap.append(el("p", { class: "clip-note", text: `Partial clip: ${item.clip_reason}` }));
    }
    return wrap;
  }

  function renderEvidence() {
    const items = alert.evidence || [];
    const key = JSON.stringify(items.map((i) => [i.evidence_id, i.clip_status, i.erased]));
    if (key === shownEvidence) return; // keep a playing clip playing
    shownEvidence = key;
    const box = document.getElementById("evidence");
    const parts = [el("h2", { text: "Evidence" })];
    if (!items.length) {
      parts.push(el("p", { class: "no-evidence", text: "No snapshot has been recorded for this alert." }));
    }
    for (const item of [...items].reverse()) {
      const fig = el("figure", { class: "evidence-item" });
      if (item.erased) {
        fig.append(el("p", { class: "erased", text: "This evidence was erased (data subject request)." }));
      } else if (item.annotated_url || item.snapshot_url) {
        fig.append(el("img", { src: item.annotated_url || item.snapshot_url, class: "snapshot",
          alt: `annotated snapshot of ${item.rule_type} on ${item.camera_id}`,
          "data-testid": "annotated", width: item.width, height: item.height }));
      }
      fig.append(el("figcaption", { text: `${item.rule_type} · ${item.camera_id} · ${localTime(item.frame_at)}`
        + (item.snapshot_url ? " · " : "") }, item.snapshot_url
        ? el("a", { href: item.snapshot_url, text: "raw frame", target: "_blank", rel: "noopener" }) : null));
      if (item.clip_url) fig.append(clipPlayer(item));
      else if (item.clip_status === "no_recording") {
        fig.append(el("p", { class: "no-clip", text: "No clip: this camera does not record." }));
      } else if (item.clip_status === "pending") {
        fig.append(el("p", { class: "no-clip", text: "Clip: waiting for the recording…" }));
      } else if (item.clip_reason) {
        fig.append(el("p", { class: "no-clip", text: `No clip: ${item.clip_reason}` }));
      }
      parts.push(fig);
    }
    box.replaceChildren(...parts);
  }

  function renderFacts() {
    const state = document.querySelector('[data-field="state"]');
    state.textContent = alert.state; state.className = `state state-${alert.state}`;
    document.querySelector('[data-field="acknowledged"]').textContent = alert.acknowledged_by
      ? `by ${alert.acknowledged_by}${alert.ack_note ? `: “${alert.ack_note}”` : ""}` : "—";
    document.querySelector('[data-field="assigned"]').textContent = alert.assigned_to || "—";
    document.querySelector('[data-field="resolved"]').textContent = alert.resolved_at
      ? `${alert.resolution || "resolved"}${alert.resolved_by ? ` by ${alert.resolved_by}` : ""}` : "—";
  }

  function renderHistory() {
    const items = (alert.history || []).map((h) => {
      const p = h.payload || {};
      const who = p.operator || p.by || p.assignee || "";
      const text = p.text || p.note || p.resolution || p.reason
        || (h.event_type === "AlertAssigned" ? `assigned to ${p.assignee || "nobody"}` : "");
      return el("li", { class: `event event-${h.event_type}` },
        el("time", { dateTime: h.occurred_at, text: localTime(h.occurred_at) }), " ",
        el("strong", { text: h.event_type.replace(/^Alert/, "") }),
        who ? ` by ${who}` : "", text ? ` — ${text}` : "",
        h.event_type === "AlertEscalated" && p.level ? ` (level ${p.level})` : "");
    });
    document.getElementById("timeline").replaceChildren(...items);
  }

  async function reload() {
    alert = await api("GET", `/api/v1/alerts/${encodeURIComponent(alert.alert_id)}`);
    renderFacts(); renderHistory(); renderEvidence();
  }

  async function send(kind, payload) {
    result.textContent = "sending…";
    try {
      const out = await api("POST",
        `/api/v1/alerts/${encodeURIComponent(alert.alert_id)}/${kind}?wait=10`, payload);
      result.textContent = out.status === "rejected" ? `Refused: ${out.reason}`
        : out.status === "applied" ? "Done." : "Sent; waiting for the alert service…";
    } catch (err) { result.textContent = `Failed: ${err.message}`; }
    await reload();
  }

  document.getElementById("ack-form")?.addEventListener("submit", (ev) => {
    ev.preventDefault();
    send("ack", { note: new FormData(ev.target).get("note") || "" });
  });
  document.getElementById("resolve-form")?.addEventListener("submit", (ev) => {
    ev.preventDefault();
    send("resolve", { resolution: new FormData(ev.target).get("resolution") || "" });
  });
  document.getElementById("assign-form")?.addEventListener("submit", (ev) => {
    ev.preventDefault();
    send("assign", { assignee: new FormData(ev.target).get("assignee") || "" });
  });
  document.getElementById("comment-form")?.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = new FormData(ev.target).get("text") || "";
    ev.target.reset();
    send("comment", { text });
  });
  liveStream((type, msg) => { if (msg.alert_id === alert.alert_id) reload(); }, null);
  // A clip is cut once the post-roll has been recorded: look again until it is final.
  const poll = setInterval(() => {
    const waiting = (alert.evidence || []).some((i) => i.clip_status === "pending") ||
      !(alert.evidence || []).length;
    if (!waiting) { clearInterval(poll); return; }
    reload().catch(() => {});
  }, 5000);
  for (const t of document.querySelectorAll(".facts time[datetime]")) {
    t.textContent = localTime(t.getAttribute("datetime"));
  }
  renderFacts(); renderHistory(); renderEvidence();
}

// ---------------------------------------------------------------------------- cameras
export function ago(iso) {
  if (!iso) return "never";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  return s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago`
    : localTime(iso);
}

function edgeStatus(sites) {
  const out = new Map();
  for (const site of sites.items || []) for (const e of site.edges || []) out.set(e.edge_id, e);
  return out;
}

/** Zones and lines over a picture, in the normalised coordinates they are stored in. */
export function overlay(zones, lines) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 1 1");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.classList.add("overlay");
  for (const z of zones) {
    const poly = document.createElementNS(NS, "polygon");
    poly.setAttribute("points", z.polygon.map((p) => `${p.x},${p.y}`).join(" "));
    poly.classList.add("zone");
    svg.append(poly);
  }
  for (const l of lines) {
    const line = document.createElementNS(NS, "line");
    line.setAttribute("x1", l.a.x); line.setAttribute("y1", l.a.y);
    line.setAttribute("x2", l.b.x); line.setAttribute("y2", l.b.y);
    line.classList.add("tripwire");
    svg.append(line);
  }
  return svg;
}

export function cameraPicture(cameraId, zones, lines, big) {
  const box = el("div", { class: big ? "picture big" : "picture" });
  const img = el("img", { src: `/console/cameras/${encodeURIComponent(cameraId)}/frame`,
    alt: `latest frame of ${cameraId}`, loading: "lazy", class: "frame" });
  img.addEventListener("error", () => img.replaceWith(el("span", { class: "no-frame",
    text: "no stored frame" })));
  box.append(img);
  if (zones || lines) box.append(overlay(zones || [], lines || []));
  return box;
}

function camerasPage() {
  const data = initialData();
  const edges = edgeStatus(data.sites);
  const grid = document.getElementById("camera-grid");
  const toggle = document.getElementById("show-zones");
  const details = new Map();
  async function render() {
    const cams = data.cameras.items || [];
    document.getElementById("empty").hidden = cams.length > 0;
    const cards = [];
    for (const c of cams) {
      let zones = null, lines = null;
      if (toggle.checked) {
        if (!details.has(c.camera_id)) {
          details.set(c.camera_id, await api("GET", `/api/v1/cameras/${encodeURIComponent(c.camera_id)}`));
        }
        ({ zones, lines } = details.get(c.camera_id));
      }
      const edge = edges.get(c.edge_id);
      const badges = [];
      if (c.stream_state !== "up") badges.push(el("span", { class: "badge bad",
        text: `stream ${c.stream_state}` }));
      if (edge && edge.status === "offline") badges.push(el("span", { class: "badge bad",
        text: `edge ${edge.status}` }));
      if (c.enabled === false) badges.push(el("span", { class: "badge", text: "disabled" }));
      cards.push(el("a", { class: `camera-card stream-${c.stream_state}`,
        href: `/console/cameras/${encodeURIComponent(c.camera_id)}`, "data-camera-id": c.camera_id },
        cameraPicture(c.camera_id, zones, lines, false),
        el("div", { class: "badges" }, ...badges),
        el("div", { class: "caption" }, el("strong", { text: c.name || c.camera_id }),
          ` ${c.camera_id}${c.site_id ? ` · ${c.site_id}` : ""} · frame ${ago(c.last_frame_at)}`)));
    }
    grid.replaceChildren(...cards);
  }
  toggle.addEventListener("change", render);
  render();
}

function systemPage() {
  const data = initialData();
  const rows = [];
  for (const site of data.sites.items || []) {
    for (const e of site.edges || []) {
      rows.push(el("tr", { class: `edge-${e.status}`, "data-edge-id": e.edge_id },
        el("td", { text: site.site_id }), el("td", { text: e.edge_id }),
        el("td", { class: e.status === "online" ? "ok" : e.status === "offline" ? "bad" : "",
          text: e.status }),
        el("td", { text: e.version || "—" }), el("td", { text: ago(e.last_heartbeat_at) }),
        el("td", { text: e.offline_since ? localTime(e.offline_since) : "—" }),
        el("td", { text: e.spool_backlog ?? "—" })));
    }
  }
  document.querySelector("#edges tbody").replaceChildren(...rows);
  document.querySelector("#streams tbody").replaceChildren(...(data.cameras.items || []).map(
    (c) => el("tr", { "data-camera-id": c.camera_id },
      el("td", {}, el("a", { href: `/console/cameras/${encodeURIComponent(c.camera_id)}`,
        text: c.camera_id })),
      el("td", { text: c.site_id || "—" }),
      el("td", { class: c.stream_state === "up" ? "ok" : "bad", text: c.stream_state }),
      el("td", { text: c.stream_reason || "" }), el("td", { text: ago(c.last_frame_at) }))));
  renderSystemStatus(data.system);
  // Status, not alerts: re-read every 15 s (the alert stream carries none of it).
  setInterval(() => api("GET", "/api/v1/system").then(renderSystemStatus).catch(() => {}), 15000);
}

const ms = (v) => (v === null || v === undefined ? "—" : `${Math.round(v)} ms`);

function renderSystemStatus(sys) {
  if (!sys) return;
  document.getElementById("system-updated").textContent = `as of ${localTime(sys.generated_at)}`;
  const note = document.getElementById("system-note");
  note.hidden = !sys.note; note.textContent = sys.note || "";
  const inf = sys.inference;
  const workers = inf.workers || [];
  document.getElementById("inference-workers").replaceChildren(...workers.map((w) =>
    el("p", { class: `worker worker-${w.state}`, "data-worker-id": w.worker_id },
      el("span", { class: `badge ${w.state === "degraded" ? "bad" : "good"}`, text: w.state === "degraded" ? "DEGRADED" : "ok" }),
      ` inference worker ${w.worker_id} since ${localTime(w.since)}`, w.reason ? ` — ${w.reason}` : "")));
  document.querySelector("#inference tbody").replaceChildren(...inf.cameras.map((c) =>
    el("tr", { "data-camera-id": c.camera_id },
      el("td", { text: c.camera_id }), el("td", { text: c.site_id || "—" }),
      el("td", { text: String(c.frames) }), el("td", { text: String(c.skipped) }),
      el("td", { "data-field": "p50", text: ms(c.p50_ms) }), el("td", { "data-field": "p95", text: ms(c.p95_ms) }),
      el("td", { text: ms(c.max_ms) }), el("td", { text: ago(c.last_analysed_at) }))));
  const empty = document.getElementById("inference-empty");
  empty.hidden = inf.cameras.length > 0;
  empty.textContent = `No frames analysed in the last ${Math.round(inf.window_s / 60)} min.`;
  const lag = document.getElementById("lag");
  if (!sys.projector_lag) lag.replaceChildren(el("p", { class: "muted", text: "Not shown to site-limited users." }));
  else {
    const l = sys.projector_lag;
    lag.replaceChildren(el("p", { class: `lag-${l.status}` },
      el("span", { class: `badge ${l.status === "ok" ? "good" : l.status === "behind" ? "warn" : "bad"}`, text: l.status }),
      ` ${l.detail}`, l.last_commit_at ? `; last commit ${ago(l.last_commit_at)}` : ""),
      l.partitions.length ? el("table", { class: "lag-parts" },
        el("thead", {}, el("tr", {}, el("th", { text: "Topic" }), el("th", { text: "Partition" }), el("th", { text: "Behind" }))),
        el("tbody", {}, ...l.partitions.map((x) => el("tr", {}, el("td", { text: x.topic }),
          el("td", { text: String(x.partition) }), el("td", { text: String(x.behind) }))))) : null);
  }
  const dead = document.getElementById("dead-letters");
  if (!sys.dead_letters) dead.replaceChildren(el("p", { class: "muted", text: "Not shown to site-limited users." }));
  else {
    const d = sys.dead_letters;
    dead.replaceChildren(el("p", { "data-field": "dead-total" }, el("span", { class: `badge ${d.total ? "bad" : "good"}`, text: String(d.total) }),
      d.total ? " message(s) the projector could not fold (also on the DLQ topic)" : " none"),
      d.newest.length ? el("table", { class: "dead" },
        el("thead", {}, el("tr", {}, ...["When", "Topic", "Partition", "Offset", "Reason"].map((t) => el("th", { text: t })))),
        el("tbody", {}, ...d.newest.map((x) => el("tr", {}, el("td", { text: localTime(x.dead_lettered_at) }),
          el("td", { text: x.topic }), el("td", { text: String(x.partition) }),
          el("td", { text: String(x.offset) }), el("td", { class: "reason", text: x.reason }))))) : null);
  }
}

// Pages other than the queue load their code on demand: the queue parses only this file.
const PAGES = { queue: queuePage, alert: alertPage, cameras: camerasPage, system: systemPage,
  camera: () => import("./camera.js").then((m) => m.cameraPage()),
  explore: () => import("./explore.js").then((m) => m.explorePage()) };
PAGES[body.dataset.page]?.();
