// One engine: its state and details, restart and remove, its memory estimate, its spec as
// YAML, its events and its log following live. The gateway (id "gateway") has this page too.

import { get, post, del, v1 } from "../api.js";
import { h, fill, errorBox, gb, since, clock, confirmAction } from "../dom.js";
import { onEvents, onStatus, refreshStatus } from "../live.js";
import { toYaml } from "../yaml.js";
import { EventList } from "../event_list.js";
import { LogView } from "../log_follow.js";

const GATEWAY = "gateway";

function field(name, label, value) {
  return [h("dt", {}, label), h("dd", { dataset: { field: name } }, value ?? "")];
}

function exitText(exit) {
  if (!exit) return "";
  const how = exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
  return `${how} at ${clock(exit.at)}`;
}

const gpuNames = (gpus) => (gpus || []).map((index) => `GPU${index}`).join(", ");

function startedText(iso) {
  return iso ? `${clock(iso)} (${since(iso)} ago)` : "";
}

function details(entry) {
  const address = entry.address;
  const has = (key) => entry[key] !== undefined;
  const state = h("span", { class: "state", dataset: { state: entry.state || "" } }, entry.state);
  return [
    field("state", "State", state),
    field("message", "Reason", entry.message),
    has("model") ? field("model", "Model", entry.model) : null,
    entry.kind ? field("kind", "Kind", `${entry.kind} (${entry.runtime})`) : null,
    field("pid", "PID", entry.pid),
    has("port") ? field("port", "Port", entry.port) : null,
    entry.url ? field("url", "URL", entry.url) : null,
    has("gpus") ? field("gpus", "GPUs", gpuNames(entry.gpus) || "none") : null,
    field("restarts", "Restarts", String(entry.restarts ?? 0)),
    has("started_at") ? field("started", "Started", startedText(entry.started_at)) : null,
    has("last_exit") ? field("last-exit", "Last exit", exitText(entry.last_exit) || "none") : null,
    address
      ? field("address", "Address", `${address.base_url} (${(address.endpoints || []).join(", ")})`)
      : null,
    entry.retiring_pid ? field("retiring-pid", "Retiring PID", entry.retiring_pid) : null,
  ];
}

function memory(entry) {
  const estimate = entry.memory_estimate;
  const reserved = entry.gpu_memory_gb;
  if (!estimate && (reserved === null || reserved === undefined)) {
    return [h("p", { class: "muted" }, "no GPU memory: this engine runs without a GPU")];
  }
  return [
    h(
      "dl",
      { class: "fields" },
      estimate ? field("estimate", "Estimate", gb(estimate.gb)) : null,
      estimate ? field("estimate-source", "Source", estimate.source) : null,
      estimate && estimate.detail ? field("estimate-detail", "How", estimate.detail) : null,
      field(
        "reserved",
        "Reserved",
        reserved === null || reserved === undefined
          ? "nothing (no process holds GPUs)"
          : `${gb(reserved)} on each of ${gpuNames(entry.gpus)}`,
      ),
    ),
  ];
}

function section(name, title, ...children) {
  const heading = h("h2", { id: `${name}-title` }, title);
  return h("section", { "aria-labelledby": `${name}-title` }, heading, ...children);
}

/** The page's view of the engine: its status entry, or the gateway's part of status. */
function entryOf(status, id) {
  if (id === GATEWAY) return status.gateway ? { id, ...status.gateway } : null;
  return (status.engines || []).find((engine) => engine.id === id) || null;
}

export function render(container, params) {
  const id = params[0] || "";
  const abort = new AbortController();
  const title = h("span", { class: "state" });
  const info = h("dl", { class: "fields", id: "engine-details" });
  const memoryBox = h("div", { id: "engine-memory" });
  const spec = h("pre", { id: "engine-spec", tabindex: "0", "aria-label": "spec as YAML" });
  const events = new EventList({ limit: 100, showEngine: false, label: `Events of ${id}` });
  const log = new LogView(id);
  const errors = errorBox();
  const eventsError = errorBox();
  const result = h("p", { class: "muted", id: "engine-action-result", role: "status" });
  const restart = h("button", { type: "button", id: "engine-restart" }, "Restart");
  const remove = h("button", { type: "button", id: "engine-remove", class: "danger" }, "Remove");
  const gone = h("p", { class: "notice", id: "engine-gone", hidden: true });

  async function act(button, question, confirmLabel, call, done) {
    errors.clear();
    result.textContent = "";
    if (!(await confirmAction(question, confirmLabel))) {
      button.focus();
      return;
    }
    button.disabled = true;
    try {
      result.textContent = done(await call());
      refreshStatus().catch(() => {});
    } catch (error) {
      errors.show(error);
    } finally {
      button.disabled = false;
      button.focus();
    }
  }
  const path = v1(`engines/${encodeURIComponent(id)}`);
  restart.addEventListener("click", () =>
    act(
      restart,
      `Restart ${id}? Its process is stopped and a new one started.`,
      "Restart",
      () => post(`${path}/restart`),
      (answer) => `restart requested at ${clock(answer.requested_at)}`,
    ),
  );
  remove.addEventListener("click", () =>
    act(
      remove,
      `Remove ${id}? Its process is stopped and it leaves the desired state.`,
      "Remove",
      () => del(path),
      (answer) => `removed in generation ${answer.generation}`,
    ),
  );

  container.append(
    h("p", {}, h("a", { href: "#/overview" }, "← Overview")),
    h("h1", {}, `Engine ${id} `, title),
    gone,
    h(
      "section",
      { "aria-label": "Actions" },
      h("div", { class: "row" }, restart, id === GATEWAY ? null : remove),
      errors.element,
      result,
    ),
    section("details", "Details", info),
    id === GATEWAY ? null : section("memory", "Memory", memoryBox),
    id === GATEWAY ? null : section("spec", "Spec", spec),
    section("events", "Events", eventsError.element, events.element),
    section("log", "Log", log.element),
  );

  let shown = null;
  let specShown = null;
  const stopStatus = onStatus((status) => {
    const entry = entryOf(status, id);
    gone.hidden = entry !== null;
    if (!entry) {
      gone.textContent =
        `no engine ${id} in the desired state now (removed, or never declared);` +
        " its events and log stay below while they exist";
      title.textContent = "";
      restart.disabled = true;
      remove.disabled = true;
      return;
    }
    restart.disabled = false;
    remove.disabled = false;
    const signature = JSON.stringify(entry);
    if (signature === shown) return;
    shown = signature;
    title.textContent = entry.state || "";
    title.dataset.state = entry.state || "";
    fill(info, details(entry));
    fill(memoryBox, memory(entry));
    const specText = entry.spec ? toYaml(entry.spec) : "";
    if (specText !== specShown) {
      specShown = specText;
      spec.textContent = specText || "(no spec)";
    }
  });

  const stopEvents = onEvents((batch) => events.add(batch.filter((event) => event.engine === id)));
  get(v1(`events?engine=${encodeURIComponent(id)}&limit=100`), { signal: abort.signal })
    .then((answer) => events.add(answer.events || []))
    .catch((error) => {
      if (!abort.signal.aborted) eventsError.show(error);
    });
  log.follow(abort.signal);

  return () => {
    abort.abort();
    stopStatus();
    stopEvents();
  };
}
