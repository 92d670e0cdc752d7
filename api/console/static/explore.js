// Explore: scene events and alerts by camera, zone, rule and time, and "find similar"
// from a person's thumbnail through the appearance-search API. Every list is what the
// JSON API answers for this user, so its site scope holds here too.

import { api, el, localTime, initialData } from "./console.js";

const PEOPLE = 24;
const SIMILAR = 12;

/** The camera page at a moment: its timeline plays the recording from there. */
function momentLink(cameraId, iso) {
  return `/console/cameras/${encodeURIComponent(cameraId)}?at=${encodeURIComponent(iso)}`;
}

function isoOf(local) { return local ? new Date(local).toISOString() : null; }

export function explorePage() {
  const data = initialData();
  const form = document.getElementById("explore-filters");
  const f = form.elements;
  const cams = data.cameras.items || [];
  const zones = data.zones.items || [];
  const rules = data.rules.items || [];
  const error = document.getElementById("explore-error");
  let cursor = null;

  for (const c of cams) f.camera.append(el("option", { value: c.camera_id, text: `${c.name || c.camera_id} (${c.camera_id})` }));
  function fillTargets() {
    const cam = f.camera.value;
    for (const [select, items, key] of [[f.zone, zones, "zone_id"], [f.rule, rules, "rule_id"]]) {
      const keep = select.value;
      select.replaceChildren(el("option", { value: "", text: "all" }),
        ...items.filter((x) => !cam || x.camera_id === cam).map((x) =>
          el("option", { value: x[key], text: `${x.name || x[key]} (${x.camera_id})` })));
      select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
    }
  }
  const params = new URLSearchParams(location.search);
  for (const k of ["camera", "zone", "rule", "since", "until"]) if (params.get(k) && f[k]) f[k].value = params.get(k);
  fillTargets();
  for (const k of ["zone", "rule"]) if (params.get(k)) f[k].value = params.get(k);
  f.camera.addEventListener("change", fillTargets);

  function query(extra = {}) {
    const q = new URLSearchParams();
    if (f.camera.value) q.set("camera", f.camera.value);
    if (f.since.value) q.set("since", isoOf(f.since.value));
    if (f.until.value) q.set("until", isoOf(f.until.value));
    for (const [k, v] of Object.entries(extra)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    return q;
  }

  function personCard(item, distance) {
    const when = item.occurred_at;
    const img = el("img", { src: `/console/detections/${encodeURIComponent(item.detection_id)}/thumbnail`,
      alt: `person on ${item.camera_id} at ${localTime(when)}`, loading: "lazy", class: "person-img", height: 120 });
    img.addEventListener("error", () => img.replaceWith(el("span", { class: "no-thumb tall", text: "no picture" })));
    const find = el("button", { type: "button", class: "find-similar", text: "Find similar" });
    find.addEventListener("click", () => similar(item));
    return el("figure", { class: "person-card", "data-detection-id": item.detection_id, "data-camera-id": item.camera_id },
      el("a", { href: momentLink(item.camera_id, when), title: "open this moment in the recording" }, img),
      el("figcaption", {}, el("strong", { text: item.camera_id }), item.site_id ? ` · ${item.site_id}` : "",
        el("br"), el("a", { href: momentLink(item.camera_id, when), class: "moment", text: localTime(when) }),
        distance !== undefined ? el("span", { class: "distance", text: ` · distance ${distance.toFixed(3)}` }) : ""),
      find);
  }

  async function similar(item) {
    const section = document.getElementById("similar-section");
    const status = document.getElementById("similar-status");
    const grid = document.getElementById("similar");
    section.hidden = false;
    status.textContent = `Looking for people like the one on ${item.camera_id} at ${localTime(item.occurred_at)}…`;
    grid.replaceChildren();
    try {
      const q = new URLSearchParams({ detection_id: item.detection_id, k: String(SIMILAR) });
      const res = await api("GET", `/api/v1/search/appearance?${q}`);
      grid.replaceChildren(...res.matches.map((m) => personCard(m, m.distance)));
      status.textContent = res.matches.length
        ? `${res.matches.length} similar people, closest first (cameras and sites you may see).`
        : "Nobody similar on the cameras you may see.";
    } catch (err) { status.textContent = `Search failed: ${err.message}`; }
    section.scrollIntoView({ block: "nearest" });
  }

  // Each "Show" is a generation: an answer to an older one that lands late is dropped,
  // so the lists always match the filters on screen.
  let generation = 0;
  const current = (gen) => gen === generation;

  async function loadPeople(gen) {
    const page = await api("GET", `/api/v1/detections?${query({ limit: PEOPLE })}`);
    if (!current(gen)) return;
    document.getElementById("people").replaceChildren(...page.items.map((d) => personCard(d)));
    document.getElementById("people-empty").hidden = page.items.length > 0;
  }

  async function loadAlerts(gen) {
    const page = await api("GET", `/api/v1/alerts?${query({ zone: f.zone.value, rule: f.rule.value, limit: 100 })}`);
    if (!current(gen)) return;
    document.querySelector("#explore-alerts tbody").replaceChildren(...page.items.map((a) =>
      el("tr", { "data-alert-id": a.alert_id },
        el("td", {}, el("a", { href: `/console/alerts/${encodeURIComponent(a.alert_id)}`, text: localTime(a.raised_at) })),
        el("td", { text: a.camera_id }), el("td", { text: `${a.rule_type} (${a.rule_id})` }),
        el("td", { text: a.zone_id || "—" }),
        el("td", {}, el("span", { class: `sev-badge sev-${a.severity}`, text: a.severity })),
        el("td", { class: `state state-${a.state}`, text: a.state }),
        el("td", {}, el("a", { href: momentLink(a.camera_id, a.first_evidence_at || a.raised_at), text: "play" })))));
    document.getElementById("alerts-empty").hidden = page.items.length > 0;
  }

  async function loadEvents(more, gen) {
    const q = query({ zone: f.zone.value, rule: f.rule.value, limit: 100, cursor: more ? cursor : null });
    const page = await api("GET", `/api/v1/events?${q}`);
    if (!current(gen)) return;
    const rows = page.items.map((e) => el("tr", { "data-event-id": e.event_id, class: `event-${e.event_type}` },
      el("td", {}, el("time", { dateTime: e.occurred_at, text: localTime(e.occurred_at) })),
      el("td", { text: e.event_type }), el("td", { text: e.camera_id }),
      el("td", { text: e.zone_id || e.line_id || "—" }), el("td", { text: e.track_id || "—" }),
      el("td", { text: e.rule_id ? `${e.rule_type || ""} (${e.rule_id})` : "—" }),
      el("td", {}, el("a", { href: momentLink(e.camera_id, e.occurred_at), text: "play" }))));
    const body = document.querySelector("#explore-events tbody");
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    cursor = page.next_cursor;
    document.getElementById("more-events").hidden = !cursor;
    document.getElementById("events-empty").hidden = body.children.length > 0;
  }

  async function show() {
    error.textContent = "";
    const state = new URLSearchParams();
    for (const k of ["camera", "zone", "rule", "since", "until"]) if (f[k].value) state.set(k, f[k].value);
    history.replaceState(null, "", `${location.pathname}${state.toString() ? `?${state}` : ""}`);
    const gen = ++generation;
    document.querySelector(".explore").dataset.shown = "";
    const results = await Promise.allSettled([loadPeople(gen), loadAlerts(gen), loadEvents(false, gen)]);
    if (!current(gen)) return;
    const failed = results.find((r) => r.status === "rejected");
    if (failed) error.textContent = failed.reason.message;
    // what the lists on screen answer (the browser test waits for it)
    document.querySelector(".explore").dataset.shown = state.toString() || "all";
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); show(); });
  document.getElementById("more-events").addEventListener("click", () => loadEvents(true, generation).catch((err) => { error.textContent = err.message; }));
  show();
}
