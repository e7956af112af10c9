// The Overview's engines table, kept in step with /v1/status row by row: a row is rebuilt
// only when what it shows changed, so a status change among 200 engines touches one row.

import { h, gb, since, stateCell } from "./dom.js";

const COLUMNS = [
  ["id", "Engine"],
  ["state", "State"],
  ["message", "Reason"],
  ["model", "Model"],
  ["pid", "PID"],
  ["port", "Port"],
  ["gpus", "GPUs"],
  ["memory", "Memory"],
  ["restarts", "Restarts"],
  ["uptime", "Uptime"],
  ["inflight", "In flight"],
  ["queued", "Queued"],
];

// States in which the engine has a process whose age is worth showing.
const RUNNING = new Set(["ready", "starting", "unhealthy", "stopping"]);

function memoryText(engine) {
  if (engine.gpu_memory_gb !== null && engine.gpu_memory_gb !== undefined) {
    const count = (engine.gpus || []).length;
    return count > 1 ? `${gb(engine.gpu_memory_gb)} × ${count}` : gb(engine.gpu_memory_gb);
  }
  const estimate = engine.memory_estimate;
  return estimate && estimate.gb !== null && estimate.gb !== undefined
    ? `est. ${gb(estimate.gb)}`
    : "";
}

function countText(value) {
  return value === null || value === undefined ? "–" : String(value);
}

function uptimeOf(engine) {
  return engine.pid && RUNNING.has(engine.state) ? engine.started_at : null;
}

function messageOf(engine) {
  const exit = engine.last_exit;
  const exitText = exit && engine.state !== "ready" ? exitDescription(exit) : "";
  return [engine.message || "", exitText].filter(Boolean).join("; ");
}

function exitDescription(exit) {
  if (exit.signal) return `last exit: signal ${exit.signal}`;
  return exit.code === null || exit.code === undefined ? "" : `last exit: code ${exit.code}`;
}

/** What a row shows, as one comparable string (uptime ticks on its own). */
function signature(engine) {
  return JSON.stringify([
    engine.role,
    engine.state,
    messageOf(engine),
    engine.model,
    engine.label,
    engine.pid,
    engine.port,
    engine.gpus,
    memoryText(engine),
    engine.memory_estimate && engine.memory_estimate.detail,
    engine.restarts,
    uptimeOf(engine),
    engine.inflight,
    engine.queued,
  ]);
}

function cell(col, ...children) {
  return h("td", { dataset: { col } }, ...children);
}

/** Engines in order, each disaggregated one followed by its prefill and decode instances. */
function withInstances(engines) {
  return engines.flatMap((engine) => [engine, ...(engine.instances || [])]);
}

function idCell(engine) {
  const link = h("a", { href: `#/engine/${encodeURIComponent(engine.id)}` }, engine.id);
  if (!engine.role) return cell("id", link);
  // An instance of a disaggregated engine: indented under it, its role in words.
  return cell("id", h("span", { class: "instance-of", "aria-hidden": "true" }, "↳ "), link);
}

function buildRow(engine, now) {
  const estimate = engine.memory_estimate;
  const started = uptimeOf(engine);
  const memory = cell("memory", memoryText(engine));
  const label = engine.label ? h("span", { class: "muted" }, ` (${engine.label})`) : null;
  const uptime = started ? since(started, now) : "";
  if (estimate && estimate.detail) memory.title = `${estimate.source}: ${estimate.detail}`;
  return h(
    "tr",
    { dataset: { engine: engine.id, role: engine.role || "" }, class: engine.role ? "instance" : "" },
    idCell(engine),
    stateCell(engine.state, engine.message),
    h("td", { class: "wrap", dataset: { col: "message" } }, messageOf(engine)),
    cell("model", engine.model || "", label),
    cell("pid", engine.pid ?? ""),
    cell("port", engine.port ?? ""),
    cell("gpus", (engine.gpus || []).join(", ")),
    memory,
    cell("restarts", String(engine.restarts ?? 0)),
    h("td", { dataset: { col: "uptime", since: started || "" } }, uptime),
    cell("inflight", countText(engine.inflight)),
    cell("queued", countText(engine.queued)),
  );
}

export class EngineTable {
  constructor() {
    this.rows = new Map(); // id -> {row, signature}
    this.body = h("tbody");
    this.empty = h("p", { class: "muted", hidden: true }, "no engines: apply a preset in Presets");
    const heads = COLUMNS.map(([col, title]) => h("th", { scope: "col", dataset: { col } }, title));
    this.element = h(
      "div",
      {},
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "engines", "aria-label": "Engines" },
          h("thead", {}, h("tr", {}, heads)),
          this.body,
        ),
      ),
      this.empty,
    );
  }

  /** Brings the rows in line with the engines, in their order; unchanged rows stay as they are. */
  update(engines, now = Date.now()) {
    const seen = new Set();
    let position = 0;
    for (const engine of withInstances(engines)) {
      seen.add(engine.id);
      const wanted = signature(engine);
      let known = this.rows.get(engine.id);
      if (!known || known.signature !== wanted) {
        const row = buildRow(engine, now);
        if (known) known.row.replaceWith(row);
        known = { row, signature: wanted };
        this.rows.set(engine.id, known);
      }
      const here = this.body.children[position];
      if (here !== known.row) this.body.insertBefore(known.row, here || null);
      position += 1;
    }
    for (const [id, known] of this.rows) {
      if (!seen.has(id)) {
        known.row.remove();
        this.rows.delete(id);
      }
    }
    this.empty.hidden = engines.length > 0;
  }

  /** Advances the uptime cells (no API read). */
  tick(now = Date.now()) {
    for (const td of this.body.querySelectorAll('td[data-col="uptime"]')) {
      if (!td.dataset.since) continue;
      const text = since(td.dataset.since, now);
      if (td.textContent !== text) td.textContent = text;
    }
  }
}
