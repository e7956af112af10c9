// A change's plan (what a dry run says it would do) and its rollout followed live: each
// engine of the change with its state until the generation is healthy, or its rollback.

import { get, v1 } from "./api.js";
import { h, fill, stateCell, errorBox } from "./dom.js";
import { onStatus, onEvents } from "./live.js";

// Colour of a generation's state, from the shell's variables (the state word is shown too).
const GENERATION_COLOURS = {
  healthy: "var(--ok)",
  "rolling out": "var(--warn)",
  failed: "var(--bad)",
  superseded: "var(--idle)",
};

/** A cell for a generation's state: `data-col="state"`, `data-state="<state>"`. */
export function generationStateCell(generation, tag = "td") {
  const state = generation.state || "";
  return h(
    tag,
    {
      class: "state",
      dataset: { col: "state", state },
      style: { color: GENERATION_COLOURS[state] || "inherit" },
    },
    state,
  );
}

/** A link to an engine's own view. */
export function engineLink(id) {
  return h("a", { href: `#/engine/${encodeURIComponent(id)}` }, id);
}

function gpuText(item) {
  if (!item.gpus || !item.gpus.length) return item.action === "start" ? "CPU" : "";
  const each = item.gpu_bytes ? ` (${(item.gpu_bytes / 2 ** 30).toFixed(1)} GiB each)` : "";
  return `GPU ${item.gpus.join(", ")}${each}`;
}

/** The plan of a change as a table; rows `tr[data-plan-engine][data-action]`. */
export function planTable(plan) {
  if (!plan.length) return h("p", { class: "notice", id: "plan-empty" }, "nothing to do: the change is already in place");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { id: "plan" },
      h("caption", { class: "muted" }, "The plan (a dry run: nothing has changed yet)"),
      h("thead", {}, h("tr", {}, ["Action", "Engine", "Reason", "GPUs"].map((t) => h("th", { scope: "col" }, t)))),
      h(
        "tbody",
        {},
        plan.map((item) =>
          h(
            "tr",
            { dataset: { planEngine: item.engine || "", action: item.action || "" } },
            h("td", { dataset: { col: "action" } }, item.action),
            h("td", { dataset: { col: "engine" } }, item.engine),
            h("td", { class: "wrap", dataset: { col: "reason" } }, item.reason || ""),
            h("td", { dataset: { col: "gpus" } }, gpuText(item)),
          ),
        ),
      ),
    ),
  );
}

/**
 * Shows the rollout of generation `number` in `container` and keeps it live.
 * `planned` are engine ids the change's answer named; the generation's own `changes` add
 * the rest. Returns the function that stops following.
 */
export function followRollout(container, number, planned = []) {
  const engines = new Set(planned.filter(Boolean));
  const removed = new Set();
  const rows = new Map();
  const heading = h("h2", { id: "rollout-title" }, `Rollout of generation ${number}`);
  const summary = h("p", { id: "rollout-summary", role: "status", "aria-live": "polite" }, "reading…");
  const body = h("tbody");
  const rollback = h("div", { id: "rollout-rollback" });
  const problem = errorBox();
  const section = h(
    "section",
    { id: "rollout", dataset: { generation: String(number) }, "aria-labelledby": "rollout-title" },
    heading,
    summary,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "rollout-engines" },
        h("thead", {}, h("tr", {}, ["Engine", "State", "Message"].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
    rollback,
    problem.element,
  );
  fill(container, section);
  let status = null;
  let stopped = false;
  let undoneBy = null; // the generation that rolled this one back

  function drawEngines() {
    const present = new Map((status ? status.engines : []).map((engine) => [engine.id, engine]));
    for (const id of engines) {
      const engine = present.get(id);
      const gone = removed.has(id) ? "removed by this change" : undoneBy ? `removed by generation ${undoneBy}` : "";
      const state = engine ? engine.state : gone ? "removed" : "absent";
      const message = engine ? engine.message || "" : gone;
      const name = engine ? engineLink(id) : id;
      const row = h("tr", { dataset: { engine: id } }, h("td", {}, name), stateCell(state, message), h("td", { class: "wrap" }, message));
      if (rows.has(id)) rows.get(id).replaceWith(row);
      else body.append(row);
      rows.set(id, row);
    }
  }

  async function findRollback() {
    const answer = await get(v1("generations?limit=20"));
    return (answer.generations || []).find((generation) => generation.reverts === number) || null;
  }

  async function readGeneration() {
    try {
      const generation = await get(v1(`generations/${number}`));
      if (stopped) return;
      for (const change of generation.changes || []) {
        engines.add(change.engine);
        if (change.removed) removed.add(change.engine);
      }
      fill(
        summary,
        "generation ",
        String(number),
        " (",
        generation.cause || "",
        "): ",
        generationStateCell(generation, "span"),
        generation.verdict ? ` — ${generation.verdict}` : "",
      );
      section.dataset.state = generation.state || "";
      drawEngines();
      if (generation.state === "failed") {
        const undo = await findRollback();
        if (stopped) return;
        undoneBy = undo ? undo.id : null;
        drawEngines();
        fill(
          rollback,
          undo
            ? h(
                "p",
                { dataset: { rollbackGeneration: String(undo.id) } },
                `rolled back by generation ${undo.id} (${undo.cause}): `,
                generationStateCell(undo, "span"),
              )
            : h("p", { class: "notice" }, generation.auto_rollback === false ? "kept as it is (rollback off)" : "waiting for the rollback…"),
        );
      }
      problem.clear();
    } catch (error) {
      if (!stopped) problem.show(error);
    }
  }

  const unsubscribe = [
    onStatus((latest) => {
      status = latest;
      drawEngines();
    }),
    onEvents((events) => {
      // A verdict, a rollback or a new generation can change what this rollout shows.
      if (events.some((event) => ["generation", "rollout", "rollback"].includes(event.type))) readGeneration();
    }),
  ];
  readGeneration();
  return () => {
    stopped = true;
    for (const undo of unsubscribe) undo();
  };
}
