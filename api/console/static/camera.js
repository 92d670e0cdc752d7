// A camera's page: its picture with zones and lines, the 24 h recordings timeline with
// alert marks, and (for admins) the zones, lines and rules editor. Loaded only on this
// page (console.js imports it on demand), so the queue's first paint does not parse it.
// Every check that matters is the server's: the editor sends what was drawn to the
// validated config routes and shows each 422 next to the field it names.

import { api, el, localTime, initialData, cameraPicture } from "./console.js";

const NS = "http://www.w3.org/2000/svg";
const DAY_MS = 24 * 3600 * 1000;
const MAX_SEGMENTS = 2000; // the recordings route's page (api/recordings.py)

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}
const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;

/** The picture box takes the frame's own aspect ratio, so normalised coordinates of the
 * overlay are the image's (the site config's convention: x right, y down, 0..1). */
function fitAspect(box, cam) {
  const f = cam.last_frame;
  if (f && f.width && f.height) box.style.aspectRatio = `${f.width} / ${f.height}`;
}

// ---------------------------------------------------------------------------- timeline
async function loadSegments(cameraId, from, to) {
  const out = [];
  let start = from;
  for (let guard = 0; guard < 20; guard++) {
    const q = new URLSearchParams({ from: new Date(start).toISOString(), to: new Date(to).toISOString() });
    let page;
    try {
      page = await api("GET", `/api/v1/cameras/${encodeURIComponent(cameraId)}/recordings?${q}`);
    } catch (err) {
      if (err.status === 404) break; // no video in (the rest of) the range
      throw err;
    }
    out.push(...page.segments);
    if (page.segments.length < MAX_SEGMENTS) break;
    start = new Date(page.segments[page.segments.length - 1].end_at).getTime();
    if (start >= to) break;
  }
  return out;
}

async function loadAlerts(cameraId, since) {
  const q = new URLSearchParams({ camera: cameraId, since: new Date(since).toISOString(), limit: "500" });
  try { return (await api("GET", `/api/v1/alerts?${q}`)).items || []; } catch { return []; }
}

/** Windows the bar can show; the data is always the last 24 h. */
const ZOOMS = [["24 h", DAY_MS], ["1 h", 3600 * 1000], ["10 min", 600 * 1000]];

async function recordingsTimeline(cam) {
  const bar = document.getElementById("rec-bar");
  const axis = document.getElementById("rec-axis");
  const status = document.getElementById("rec-status");
  const player = document.getElementById("rec-player");
  const zoomBox = document.getElementById("rec-zoom");
  const at = new URLSearchParams(location.search).get("at");
  const wanted = at ? new Date(at).getTime() : null;
  // The data ends now, or just after a moment asked for that lies in the future of it.
  const end = Math.max(Date.now(), wanted ? wanted + 60_000 : 0);
  const start = end - DAY_MS;
  // what the bar shows: [view.from, view.from + view.span)
  const view = { from: start, span: DAY_MS };
  const pos = (t) => `${(((t - view.from) / view.span) * 100).toFixed(3)}%`;
  let segments = [];
  let alerts = [];
  try {
    [segments, alerts] = await Promise.all([loadSegments(cam.camera_id, start, end),
      loadAlerts(cam.camera_id, start)]);
  } catch (err) {
    status.textContent = `Recordings could not be loaded: ${err.message}`;
    return;
  }
  const spans = segments.map((s) => ({ ...s, from: new Date(s.start_at).getTime(), to: new Date(s.end_at).getTime() }));
  const marks = alerts.map((a) => ({ a, t: new Date(a.first_evidence_at || a.raised_at).getTime() }))
    .filter((m) => m.t >= start && m.t <= end);
  const cursor = el("span", { class: "rec-cursor", hidden: true });
  let cursorAt = null;
  const hm = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  function render() {
    const vEnd = view.from + view.span;
    const ticks = [];
    const step = view.span / 8;
    for (let i = 0; i <= 8; i++) {
      const t = view.from + i * step;
      const tick = el("span", { class: "tick", text: hm.format(new Date(t)) });
      tick.style.left = pos(t);
      ticks.push(tick);
    }
    axis.replaceChildren(...ticks);
    const parts = [];
    for (const s of spans) {
      if (s.to < view.from || s.from > vEnd) continue;
      const block = el("span", { class: "rec-seg", title: `${localTime(s.start_at)} – ${localTime(s.end_at)}` });
      block.style.left = pos(Math.max(s.from, view.from));
      block.style.width = `${Math.max(0.05, ((Math.min(s.to, vEnd) - Math.max(s.from, view.from)) / view.span) * 100).toFixed(3)}%`;
      parts.push(block);
    }
    for (const { a, t } of marks) {
      if (t < view.from || t > vEnd) continue;
      const mark = el("button", { type: "button", class: `rec-alert sev-${a.severity}`,
        title: `${a.rule_type} · ${localTime(a.raised_at)}`, "data-alert-id": a.alert_id,
        "aria-label": `alert ${a.rule_type} at ${localTime(a.raised_at)}: play from there` });
      mark.style.left = pos(t);
      mark.addEventListener("click", (ev) => { ev.stopPropagation(); playFrom(t); });
      parts.push(mark);
    }
    if (cursorAt !== null) cursor.style.left = pos(cursorAt);
    bar.replaceChildren(...parts, cursor);
  }

  /** Zoom around the moment played (else the newest recording, else now). */
  function zoom(span) {
    const centre = cursorAt ?? (spans.length ? spans[spans.length - 1].to : end);
    view.span = span;
    view.from = Math.min(end - span, Math.max(start, centre - span / 2));
    for (const b of zoomBox.querySelectorAll("button")) b.setAttribute("aria-pressed", String(Number(b.dataset.span) === span));
    render();
  }
  zoomBox.replaceChildren(...ZOOMS.map(([label, span]) => {
    const b = el("button", { type: "button", text: label, "data-span": String(span), "aria-pressed": String(span === DAY_MS) });
    b.addEventListener("click", () => zoom(span));
    return b;
  }));
  render();
  status.textContent = spans.length
    ? `${spans.length} segment(s) recorded; ${marks.length} alert(s). Click the bar to play from a moment.`
    : "No recordings of this camera in the last 24 h.";

  /** The segment holding moment t; else, since a pixel of the bar may be a minute or
   * more, the nearest one within three pixels (played from its start). */
  function segmentAt(t) {
    const inside = spans.find((s) => s.from <= t && t < s.to);
    if (inside) return [inside, t];
    const slack = (3 * view.span) / Math.max(1, bar.getBoundingClientRect().width);
    let best = null, bestD = Infinity;
    for (const s of spans) {
      const d = t < s.from ? s.from - t : t - s.to;
      if (d < bestD) { best = s; bestD = d; }
    }
    if (!best || bestD > slack) return [null, t];
    return [best, best.from];
  }

  let current = null;
  function playFrom(asked) {
    const [seg, t] = segmentAt(asked);
    cursorAt = t; cursor.hidden = false; cursor.style.left = pos(t);
    if (!seg || !seg.url) {
      status.textContent = `No recording at ${localTime(new Date(asked).toISOString())}.`;
      player.hidden = true;
      return;
    }
    const offset = Math.max(0, (t - seg.from) / 1000);
    current = seg;
    player.hidden = false;
    player.dataset.segmentId = seg.segment_id;
    player.dataset.playingFrom = new Date(seg.from + offset * 1000).toISOString();
    const go = () => { player.currentTime = offset; player.play().catch(() => {}); };
    if (player.src !== seg.url) { player.src = seg.url; player.addEventListener("loadedmetadata", go, { once: true }); }
    else go();
    status.textContent = `Playing from ${localTime(player.dataset.playingFrom)}${t !== asked ? " (the recording nearest to the moment clicked)" : ""}.`;
  }
  player.addEventListener("ended", () => {
    if (!current) return;
    const next = spans.find((s) => s.from >= current.to - 1500 && s !== current);
    if (next) playFrom(next.from);
  });
  player.addEventListener("timeupdate", () => {
    if (!current) return;
    cursorAt = current.from + player.currentTime * 1000;
    cursor.style.left = pos(cursorAt);
  });
  bar.addEventListener("click", (ev) => {
    const r = bar.getBoundingClientRect();
    playFrom(view.from + ((ev.clientX - r.left) / r.width) * view.span);
  });
  bar.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && spans.length) playFrom(spans[spans.length - 1].from);
  });
  if (wanted) { playFrom(wanted); zoom(ZOOMS[2][1]); }
}

// ---------------------------------------------------------------------------- editor
function clearErrors(form) {
  for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
}

/** Each 422 error next to the field its `loc` names (body.polygon, path.zone_id,
 * body.schedule.start ...); what names no field of the form goes on top of the form. */
function showErrors(form, err) {
  clearErrors(form);
  const list = err?.data?.details?.errors;
  if (!Array.isArray(list) || !list.length) {
    form.querySelector('[data-error-for="_form"]').textContent = err.message || "Failed";
    return;
  }
  for (const e of list) {
    const loc = (e.loc || []).filter((p, i) => !(i === 0 && ["body", "path", "query"].includes(p)));
    const msg = String(e.msg || "invalid").replace(/^Value error, /, "");
    const keys = [];
    for (let n = loc.length; n > 0; n--) keys.push(loc.slice(0, n).join("."));
    if (/^(zone|line|rule)_id$/.test(loc[0] || "") && e.loc?.[0] === "path") keys.unshift("id");
    const name = keys.map((k) => (/^(polygon|a|b)\./.test(k) ? k.split(".")[0] : k))
      .find((k) => form.querySelector(`[data-error-for="${k}"]`));
    const where = form.querySelector(`[data-error-for="${name || "_form"}"]`);
    where.textContent = where.textContent ? `${where.textContent} ${msg}` : msg;
  }
}

/** After a 202, wait until the read model (what the scene agent and every page use)
 * shows the change, so "in effect" on the page means in effect. */
async function untilProjected(cameraId, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const cam = await api("GET", `/api/v1/cameras/${encodeURIComponent(cameraId)}`);
    if (check(cam)) return cam;
    await new Promise((r) => setTimeout(r, 500));
  }
  return null;
}

function sameShape(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

function editor(camState, refreshView) {
  const root = document.getElementById("editor");
  if (!root) return;
  const cam = () => camState.cam;
  const shapeForm = document.getElementById("shape-form");
  const ruleForm = document.getElementById("rule-form");
  const list = document.getElementById("shape-list");
  const box = document.getElementById("editor-picture");
  fitAspect(box, cam());
  const img = el("img", { src: `/console/cameras/${encodeURIComponent(cam().camera_id)}/frame?editor=1`,
    alt: `current frame of ${cam().camera_id}`, class: "frame" });
  img.addEventListener("error", () => img.replaceWith(el("span", { class: "no-frame", text: "no stored frame: drawing on a blank picture" })));
  const svg = svgEl("svg", { viewBox: "0 0 1 1", preserveAspectRatio: "none", class: "overlay editing",
    "data-testid": "editor-svg", tabindex: "0", role: "application",
    "aria-label": "drawing area: arrow keys move the cross (with Shift, faster), Enter places a point, Backspace removes the last" });
  box.append(img, svg);

  // what is being edited: {type: "zone"|"line", id, isNew, name, kind, points: [{x,y}]}
  let shape = null;
  let drag = null;
  // the keyboard's pointer: where Enter places the next point
  const cross = { x: 0.5, y: 0.5, shown: false };

  function toNorm(ev) {
    const r = svg.getBoundingClientRect();
    return { x: round((ev.clientX - r.left) / r.width), y: round((ev.clientY - r.top) / r.height) };
  }

  function draw() {
    const parts = [];
    const c = cam();
    for (const z of c.zones) {
      if (shape && shape.type === "zone" && shape.id === z.zone_id && !shape.isNew) continue;
      parts.push(svgEl("polygon", { points: z.polygon.map((p) => `${p.x},${p.y}`).join(" "), class: "zone" }));
    }
    for (const l of c.lines) {
      if (shape && shape.type === "line" && shape.id === l.line_id && !shape.isNew) continue;
      parts.push(...arrow(l.a, l.b, "tripwire"));
    }
    if (shape) {
      const pts = shape.points;
      if (shape.type === "zone" && pts.length >= 2) {
        parts.push(svgEl(pts.length >= 3 ? "polygon" : "polyline",
          { points: pts.map((p) => `${p.x},${p.y}`).join(" "), class: "zone editing-shape" }));
      }
      if (shape.type === "line" && pts.length === 2) parts.push(...arrow(pts[0], pts[1], "tripwire editing-shape"));
      pts.forEach((p, i) => {
        const h = svgEl("circle", { cx: p.x, cy: p.y, r: 0.012, class: "handle", "data-index": i });
        h.addEventListener("pointerdown", (ev) => { ev.stopPropagation(); drag = i; svg.setPointerCapture(ev.pointerId); });
        parts.push(h);
        if (shape.type === "line") {
          const t = svgEl("text", { x: p.x + 0.015, y: p.y - 0.015, class: "handle-label" });
          t.textContent = i === 0 ? "a" : "b";
          parts.push(t);
        }
      });
    }
    if (cross.shown) {
      const d = 0.02;
      parts.push(svgEl("path", { d: `M${cross.x - d},${cross.y} H${cross.x + d} M${cross.x},${cross.y - d} V${cross.y + d}`, class: "key-cross" }));
    }
    svg.replaceChildren(...parts);
    if (shape) {
      const n = shape.points.length;
      shapeForm.querySelector('[data-field="points"]').textContent = shape.type === "zone"
        ? `${n} corner(s)${n < 3 ? ": click on the picture to add corners (at least 3)" : ""}`
        : n < 2 ? `click on the picture to place ${n ? "b" : "a"}` : `a (${pts(shape.points[0])}) → b (${pts(shape.points[1])})`;
    }
  }
  const pts = (p) => `${p.x.toFixed(3)}, ${p.y.toFixed(3)}`;

  /** A directed line with an arrow at b and a tick on its right (forward) side. */
  function arrow(a, b, cls) {
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const ux = dx / len, uy = dy / len, s = 0.03;
    const head = svgEl("polyline", { points: `${b.x - ux * s - uy * s * 0.6},${b.y - uy * s + ux * s * 0.6} ${b.x},${b.y} ${b.x - ux * s + uy * s * 0.6},${b.y - uy * s - ux * s * 0.6}`, class: `${cls} arrow` });
    const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
    const side = svgEl("line", { x1: mx, y1: my, x2: mx - uy * s, y2: my + ux * s, class: `${cls} forward-tick` });
    return [svgEl("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: cls }), head, side];
  }

  svg.addEventListener("pointermove", (ev) => {
    if (drag === null || !shape) return;
    shape.points[drag] = toNorm(ev); draw();
  });
  svg.addEventListener("pointerup", () => { drag = null; });
  svg.addEventListener("keydown", (ev) => {
    const step = ev.shiftKey ? 0.05 : 0.01;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[ev.key]) {
      cross.x = round(cross.x + moves[ev.key][0]); cross.y = round(cross.y + moves[ev.key][1]);
      cross.shown = true;
    } else if ((ev.key === "Enter" || ev.key === " ") && shape
               && !(shape.type === "line" && shape.points.length >= 2)) {
      shape.points.push({ x: cross.x, y: cross.y });
    } else if (ev.key === "Backspace" && shape) {
      shape.points.pop();
    } else return;
    ev.preventDefault();
    draw();
  });
  svg.addEventListener("blur", () => { cross.shown = false; draw(); });
  svg.addEventListener("click", (ev) => {
    if (!shape || ev.target.classList?.contains("handle")) return;
    if (shape.type === "line" && shape.points.length >= 2) return;
    shape.points.push(toNorm(ev)); draw();
  });

  function renderList() {
    const c = cam();
    const items = [
      ...c.zones.map((z) => ({ type: "zone", id: z.zone_id, label: `zone ${z.name} (${z.zone_id})` })),
      ...c.lines.map((l) => ({ type: "line", id: l.line_id, label: `line ${l.name} (${l.line_id})` })),
    ];
    list.replaceChildren(...items.map((it) => {
      const b = el("button", { type: "button", class: "shape-pick", text: it.label, "data-shape": `${it.type}/${it.id}` });
      b.addEventListener("click", () => open(it.type, it.id));
      return b;
    }));
    fillRuleTargets();
  }

  function open(type, id) {
    const c = cam();
    clearErrors(shapeForm);
    shapeForm.hidden = false;
    shapeForm.dataset.type = type;
    for (const n of shapeForm.querySelectorAll("[data-only]")) n.hidden = n.dataset.only !== type;
    shapeForm.querySelector('[data-field="status"]').textContent = "";
    const f = shapeForm.elements;
    if (id === null) {
      shape = { type, id: "", isNew: true, points: [] };
      f.id.value = ""; f.id.readOnly = false; f.name.value = ""; f.kind.value = "zone";
      document.getElementById("shape-title").textContent = type === "zone" ? "New zone" : "New line";
    } else if (type === "zone") {
      const z = c.zones.find((x) => x.zone_id === id);
      shape = { type, id, isNew: false, points: z.polygon.map((p) => ({ x: p.x, y: p.y })) };
      f.id.value = id; f.id.readOnly = true; f.name.value = z.name; f.kind.value = z.kind;
      document.getElementById("shape-title").textContent = `Zone ${z.name}`;
    } else {
      const l = c.lines.find((x) => x.line_id === id);
      shape = { type, id, isNew: false, points: [{ ...l.a }, { ...l.b }] };
      f.id.value = id; f.id.readOnly = true; f.name.value = l.name;
      document.getElementById("shape-title").textContent = `Line ${l.name}`;
    }
    shapeForm.querySelector('[data-action="delete"]').hidden = shape.isNew;
    draw();
    f.name.focus();
  }

  document.getElementById("new-zone").addEventListener("click", () => open("zone", null));
  document.getElementById("new-line").addEventListener("click", () => open("line", null));
  shapeForm.addEventListener("click", async (ev) => {
    const action = ev.target?.dataset?.action;
    if (!action || !shape) return;
    if (action === "undo") { shape.points.pop(); draw(); }
    else if (action === "clear") { shape.points = []; draw(); }
    else if (action === "swap") { shape.points.reverse(); draw(); }
    else if (action === "cancel") { shape = null; shapeForm.hidden = true; draw(); }
    else if (action === "delete") {
      if (!window.confirm(`Delete ${shape.type} ${shape.id}? Rules on it stop working.`)) return;
      await remove(shapeForm, `/api/v1/${shape.type}s/${encodeURIComponent(shape.id)}`,
        (c) => !(shape.type === "zone" ? c.zones.some((z) => z.zone_id === shape.id) : c.lines.some((l) => l.line_id === shape.id)));
      shape = null; shapeForm.hidden = true; draw();
    }
  });

  async function remove(form, path, gone) {
    const status = form.querySelector('[data-field="status"]');
    clearErrors(form);
    try {
      await api("DELETE", path);
      status.textContent = "Deleted; waiting until it is in effect…";
      const c = await untilProjected(cam().camera_id, gone);
      if (c) { camState.cam = c; refreshView(); renderList(); status.textContent = "Deleted."; }
      else status.textContent = "Deleted; not yet in effect (the projector is behind).";
    } catch (err) { showErrors(form, err); status.textContent = ""; }
  }

  shapeForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!shape) return;
    const f = shapeForm.elements;
    const status = shapeForm.querySelector('[data-field="status"]');
    clearErrors(shapeForm);
    const id = f.id.value.trim();
    const body = { camera_id: cam().camera_id, name: f.name.value.trim() };
    let check;
    if (shape.type === "zone") {
      body.kind = f.kind.value;
      body.polygon = shape.points;
      check = (c) => c.zones.some((z) => z.zone_id === id && sameShape(z.polygon, body.polygon) && z.name === body.name && z.kind === body.kind);
    } else {
      // the API names a missing end after the field, so the message lands next to it
      if (shape.points[0]) body.a = shape.points[0];
      if (shape.points[1]) body.b = shape.points[1];
      check = (c) => c.lines.some((l) => l.line_id === id && sameShape(l.a, body.a) && sameShape(l.b, body.b) && l.name === body.name);
    }
    status.textContent = "Saving…";
    try {
      await api("PUT", `/api/v1/${shape.type}s/${encodeURIComponent(id || "-")}`, body);
    } catch (err) { showErrors(shapeForm, err); status.textContent = ""; return; }
    status.textContent = "Saved; waiting until it is in effect…";
    const c = await untilProjected(cam().camera_id, check);
    if (!c) { status.textContent = "Saved; not yet in effect (the projector is behind)."; return; }
    camState.cam = c; shape = { ...shape, id, isNew: false };
    f.id.readOnly = true;
    document.getElementById("shape-title").textContent = `${shape.type === "zone" ? "Zone" : "Line"} ${body.name}`;
    shapeForm.querySelector('[data-action="delete"]').hidden = false;
    refreshView(); renderList(); draw();
    status.textContent = "Saved and in effect.";
  });

  // ------------------------------------------------------------------------ rules
  const rf = ruleForm.elements;
  function fillRuleTargets() {
    const c = cam();
    for (const [name, items, key] of [["zone_id", c.zones, "zone_id"], ["line_id", c.lines, "line_id"]]) {
      const select = rf[name], keep = select.value;
      select.replaceChildren(el("option", { value: "", text: "—" }),
        ...items.map((x) => el("option", { value: x[key], text: `${x.name} (${x[key]})` })));
      select.value = keep;
    }
    const keep = rf.pick.value;
    rf.pick.replaceChildren(el("option", { value: "", text: "new rule" }),
      ...c.rules.map((r) => el("option", { value: r.rule_id, text: `${r.rule_id} (${r.rule_type})` })));
    rf.pick.value = keep;
  }
  function showTypeFields() {
    const t = rf.rule_type.value;
    for (const n of ruleForm.querySelectorAll("[data-for-types]")) {
      n.hidden = !n.dataset.forTypes.split(" ").includes(t);
    }
  }
  const NUMBERS = ["dwell_s", "gap_tolerance_s", "min_people", "clear_below", "window_s",
    "cooldown_s", "escalation_s", "max_escalation_level"];
  // the alert policy: left empty, the site-wide policy (VIGIL_ALERTS_*) applies
  const OPTIONAL = new Set(["cooldown_s", "escalation_s", "max_escalation_level"]);
  const sameValue = (x, y) => (x === null || x === undefined ? y === null || y === undefined
    : Number(x) === Number(y));
  function loadRule(id) {
    clearErrors(ruleForm);
    ruleForm.querySelector('[data-field="status"]').textContent = "";
    const r = cam().rules.find((x) => x.rule_id === id);
    rf.id.readOnly = Boolean(r);
    ruleForm.querySelector('[data-action="delete"]').hidden = !r;
    if (!r) { rf.id.value = ""; return; }
    rf.id.value = r.rule_id; rf.rule_type.value = r.rule_type;
    rf.zone_id.value = r.zone_id || ""; rf.line_id.value = r.line_id || "";
    rf.direction.value = r.direction || ""; rf.severity.value = r.severity;
    rf.enabled.checked = r.enabled;
    rf.auto_resolve.value = r.auto_resolve === null || r.auto_resolve === undefined ? "" : String(r.auto_resolve);
    rf.schedule_kind.value = r.schedule?.kind || "always";
    rf.schedule_start.value = r.schedule?.start || ""; rf.schedule_end.value = r.schedule?.end || "";
    rf.classes.value = (r.classes || []).join(", ");
    for (const n of NUMBERS) rf[n].value = r[n] ?? "";
    showTypeFields();
  }
  rf.pick.addEventListener("change", () => loadRule(rf.pick.value));
  rf.rule_type.addEventListener("change", showTypeFields);
  ruleForm.querySelector('[data-action="delete"]').addEventListener("click", async () => {
    const id = rf.id.value;
    if (!id || !window.confirm(`Delete rule ${id}?`)) return;
    await remove(ruleForm, `/api/v1/rules/${encodeURIComponent(id)}`, (c) => !c.rules.some((r) => r.rule_id === id));
    rf.pick.value = ""; loadRule("");
  });
  ruleForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(ruleForm);
    const status = ruleForm.querySelector('[data-field="status"]');
    const id = rf.id.value.trim();
    const type = rf.rule_type.value;
    const body = {
      camera_id: cam().camera_id, rule_type: type, severity: rf.severity.value,
      enabled: rf.enabled.checked,
      auto_resolve: rf.auto_resolve.value === "" ? null : rf.auto_resolve.value === "true",
      zone_id: type === "line_crossing" ? null : (rf.zone_id.value || null),
      line_id: type === "line_crossing" ? (rf.line_id.value || null) : null,
      direction: type === "line_crossing" ? (rf.direction.value || null) : null,
      schedule: { kind: rf.schedule_kind.value },
      classes: rf.classes.value.split(",").map((s) => s.trim()).filter(Boolean),
    };
    if (rf.schedule_start.value) body.schedule.start = rf.schedule_start.value.trim();
    if (rf.schedule_end.value) body.schedule.end = rf.schedule_end.value.trim();
    // numbers go as typed: an empty or odd value is for the server to refuse, by name
    for (const n of NUMBERS) {
      const raw = rf[n].value.trim();
      if (raw === "" && OPTIONAL.has(n)) continue;
      body[n] = raw === "" ? null : (Number.isFinite(Number(raw)) ? Number(raw) : raw);
    }
    status.textContent = "Saving…";
    try {
      await api("PUT", `/api/v1/rules/${encodeURIComponent(id || "-")}`, body);
    } catch (err) { showErrors(ruleForm, err); status.textContent = ""; return; }
    status.textContent = "Saved; waiting until it is in effect…";
    const c = await untilProjected(cam().camera_id, (x) => x.rules.some((r) => r.rule_id === id
      && r.rule_type === type && r.severity === body.severity && r.enabled === body.enabled
      && (r.zone_id || null) === body.zone_id && (r.line_id || null) === body.line_id
      && NUMBERS.every((n) => sameValue(r[n], body[n]))));
    if (!c) { status.textContent = "Saved; not yet in effect (the projector is behind)."; return; }
    camState.cam = c; refreshView(); renderList();
    rf.pick.value = id; loadRule(id);
    status.textContent = "Saved and in effect.";
  });
  showTypeFields();
  renderList();
  draw();
}

// ---------------------------------------------------------------------------- page
export function cameraPage() {
  const state = { cam: initialData() };
  const view = document.getElementById("camera-view");
  function refreshView() {
    const c = state.cam;
    const pic = cameraPicture(c.camera_id, c.zones, c.lines, true);
    fitAspect(pic, c);
    view.replaceChildren(pic);
    document.getElementById("zones-list").replaceChildren(
      ...c.zones.map((z) => el("li", {}, "zone ", el("strong", { text: z.name }), ` (${z.zone_id}, ${z.kind})`)),
      ...c.lines.map((l) => el("li", {}, "line ", el("strong", { text: l.name }), ` (${l.line_id})`)));
    const rows = c.rules.map((r) => el("tr", { "data-rule-id": r.rule_id },
      el("td", { text: r.rule_id }), el("td", { text: r.rule_type }),
      el("td", { text: r.zone_id || r.line_id || "—" }),
      el("td", {}, el("span", { class: `sev-badge sev-${r.severity}`, text: r.severity })),
      el("td", { text: r.enabled ? "yes" : "no" }),
      el("td", { text: r.schedule.kind + (r.schedule.start ? ` ${r.schedule.start}–${r.schedule.end}` : "") }),
      el("td", { text: r.escalation_s === null || r.escalation_s === undefined ? "site default"
        : `${Math.round((r.escalation_s / 60) * 10) / 10} min` })));
    document.getElementById("rules-body").replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colSpan: 7, text: "No rules." }))]));
  }
  refreshView();
  for (const t of document.querySelectorAll(".facts time[datetime]")) {
    if (t.getAttribute("datetime")) t.textContent = localTime(t.getAttribute("datetime"));
  }
  recordingsTimeline(state.cam);
  editor(state, refreshView);
}

