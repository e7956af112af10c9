// The Overview: GPU bars, the engines table, the gateway line and the latest events, all
// redrawn from the live feed (a status change re-renders only what changed).

import { h, fill } from "../dom.js";
import { onEvents, onStatus, recentEvents } from "../live.js";
import { gpuBars } from "../gpu_bars.js";
import { EngineTable } from "../engine_table.js";
import { EventList } from "../event_list.js";

function gatewayLine(gateway) {
  if (!gateway) return [];
  if (!gateway.enabled) {
    return [
      h("strong", {}, "Gateway "),
      h("span", { class: "state", dataset: { state: "stopped" } }, "disabled"),
      h("span", { class: "muted" }, " (gateway.enabled: false in config.yaml)"),
    ];
  }
  const totals = gateway.totals;
  return [
    h("strong", {}, "Gateway "),
    h(
      "a",
      { href: "#/engine/gateway", class: "state", dataset: { state: gateway.state || "" } },
      gateway.state || "",
    ),
    " at ",
    h("code", {}, gateway.url || ""),
    gateway.pid ? h("span", { class: "muted" }, ` · pid ${gateway.pid}`) : null,
    h("span", { class: "muted" }, ` · restarts ${gateway.restarts ?? 0}`),
    gateway.message ? h("span", {}, ` · ${gateway.message}`) : null,
    totals
      ? h(
          "span",
          { class: "muted", dataset: { field: "totals" } },
          ` · ${totals.requests ?? 0} requests, ${totals.rejected ?? 0} rejected,` +
            ` ${totals.retries ?? 0} retries, ${totals.errors ?? 0} errors`,
        )
      : null,
  ];
}

export function render(container) {
  const gpus = h("div", { id: "gpus" });
  const gateway = h("p", { id: "gateway-line" });
  const table = new EngineTable();
  const events = new EventList({ limit: 20, label: "Latest events" });
  const summary = h("span", { class: "muted", id: "engine-count" });
  container.append(
    h("h1", {}, "Overview"),
    h("section", { "aria-labelledby": "gpus-title" }, h("h2", { id: "gpus-title" }, "GPUs"), gpus),
    h(
      "section",
      { "aria-labelledby": "engines-title" },
      h("h2", { id: "engines-title" }, "Engines ", summary),
      gateway,
      table.element,
    ),
    h(
      "section",
      { "aria-labelledby": "events-title" },
      h("h2", { id: "events-title" }, "Latest events"),
      events.element,
    ),
  );

  let gpuSignature = null;
  let gatewaySignature = null;
  const show = (status) => {
    const now = Date.now();
    // The GPU section is small, but skipping an unchanged one keeps focus and hover intact.
    const gpuNow = JSON.stringify(status.gpus || null);
    if (gpuNow !== gpuSignature) {
      gpuSignature = gpuNow;
      fill(gpus, gpuBars(status.gpus));
    }
    const gatewayNow = JSON.stringify(status.gateway || null);
    if (gatewayNow !== gatewaySignature) {
      gatewaySignature = gatewayNow;
      fill(gateway, gatewayLine(status.gateway));
      gateway.hidden = !status.gateway;
    }
    const engines = status.engines || [];
    table.update(engines, now);
    const ready = engines.filter((engine) => engine.state === "ready").length;
    summary.textContent = engines.length ? `${ready} of ${engines.length} ready` : "";
  };

  events.add(recentEvents());
  const stopStatus = onStatus(show);
  const stopEvents = onEvents((batch) => events.add(batch));
  // Uptimes advance on their own; this reads no API.
  const ticker = setInterval(() => table.tick(), 1000);
  return () => {
    stopStatus();
    stopEvents();
    clearInterval(ticker);
  };
}
