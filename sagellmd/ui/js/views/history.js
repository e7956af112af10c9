// History: the generations with their cause, state and verdict, the difference between any
// two of them, and a rollback to one; a new generation appears as it is made.

import { get, post, v1 } from "../api.js";
import { clock, coalescing, confirmAction, errorBox, fill, h, since } from "../dom.js";
import { diffGenerations } from "../gendiff.js";
import { onEvents, onStatus } from "../live.js";
import { followRollout, generationStateCell } from "../rollout.js";

const SHOWN = 50;

/** The time of day for today's generations, the date and time for older ones. */
function when(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return iso || "";
  return date.toDateString() === new Date().toDateString() ? clock(iso) : date.toLocaleString();
}

function valueText(value) {
  return value === undefined ? "(not set)" : JSON.stringify(value);
}

function diffSection(from, to) {
  const diff = diffGenerations(from, to);
  const parts = [h("h2", { id: "diff-title" }, `From generation ${from.id} to generation ${to.id}`)];
  if (!diff.added.length && !diff.removed.length && !diff.changed.length) {
    parts.push(h("p", { class: "notice", id: "diff-none" }, "the same engines with the same specs"));
  }
  const engineList = (kind, title, engines) =>
    engines.length
      ? [
          h("h3", {}, title),
          h(
            "ul",
            { dataset: { diffList: kind } },
            engines.map((engine) =>
              h("li", { dataset: { diff: kind, engine: engine.id } }, engine.id, h("span", { class: "muted" }, ` (${engine.spec?.model ?? ""})`)),
            ),
          ),
        ]
      : [];
  parts.push(...engineList("added", "Added", diff.added), ...engineList("removed", "Removed", diff.removed));
  if (diff.changed.length) {
    parts.push(
      h("h3", {}, "Changed"),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "diff-changed" },
          h("thead", {}, h("tr", {}, ["Engine", "Field", `In ${from.id}`, `In ${to.id}`].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            diff.changed.flatMap((engine) =>
              engine.fields.map((field) =>
                h(
                  "tr",
                  { dataset: { diff: "changed", engine: engine.id, field: field.field } },
                  h("td", {}, engine.id),
                  h("td", {}, field.field),
                  h("td", { class: "wrap" }, h("code", {}, valueText(field.before))),
                  h("td", { class: "wrap" }, h("code", {}, valueText(field.after))),
                ),
              ),
            ),
          ),
        ),
      ),
    );
  }
  return parts;
}

export async function render(container) {
  const listError = errorBox();
  const tableBody = h("tbody");
  const notice = h("p", { id: "rollback-notice", role: "status", "aria-live": "polite" });
  const diffArea = h("section", { id: "diff", "aria-labelledby": "diff-title" });
  const rolloutArea = h("div", { id: "rollout-area" });
  let stopRollout = null;
  let generations = [];
  let picked = [];
  let knownGeneration = null;

  fill(
    container,
    h("h1", {}, "History"),
    h("p", { class: "muted" }, "Every change makes a generation. Pick two to see what differs between them."),
    listError.element,
    notice,
    rolloutArea,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "generations" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Compare", "Generation", "Time", "Cause", "State", "Verdict", "Presets", "Engines", "Rollback"].map((t) => h("th", { scope: "col" }, t)),
          ),
        ),
        tableBody,
      ),
    ),
    diffArea,
  );

  function drawDiff() {
    const chosen = picked.map((id) => generations.find((generation) => generation.id === id)).filter(Boolean);
    if (chosen.length < 2) {
      fill(diffArea, h("h2", { id: "diff-title" }, "Difference"), h("p", { class: "notice" }, "pick two generations to compare"));
      delete diffArea.dataset.from;
      delete diffArea.dataset.to;
      return;
    }
    const [from, to] = chosen.sort((a, b) => a.id - b.id);
    diffArea.dataset.from = String(from.id);
    diffArea.dataset.to = String(to.id);
    fill(diffArea, diffSection(from, to));
  }

  function pick(id, on) {
    picked = picked.filter((other) => other !== id);
    if (on) picked.push(id);
    // Two at most: a third pick lets go of the earliest.
    if (picked.length > 2) picked = picked.slice(-2);
    for (const box of tableBody.querySelectorAll("input[type=checkbox]")) {
      box.checked = picked.includes(Number(box.value));
    }
    drawDiff();
  }

  async function rollback(generation, button, problem) {
    problem.clear();
    const question = `Roll back to generation ${generation.id}? The desired state becomes what it was then (${generation.engines.length} engines); this makes a new generation.`;
    if (!(await confirmAction(question, `Roll back to ${generation.id}`))) return;
    button.disabled = true;
    try {
      const answer = await post(v1("rollback"), { to: generation.id });
      fill(notice, `generation ${answer.generation}: back to generation ${answer.to}`);
      notice.dataset.generation = String(answer.generation);
      // The rollback is a change like any other: its engines followed until healthy.
      if (stopRollout) stopRollout();
      stopRollout = followRollout(rolloutArea, answer.generation, (answer.plan || []).map((item) => item.engine));
      notice.scrollIntoView({ block: "nearest" });
      await load();
    } catch (error) {
      problem.show(error);
    } finally {
      button.disabled = false;
    }
  }

  function generationRow(generation, current) {
    const problem = errorBox();
    const box = h("input", {
      type: "checkbox",
      value: String(generation.id),
      id: `compare-${generation.id}`,
      checked: picked.includes(generation.id),
    });
    box.addEventListener("change", () => pick(generation.id, box.checked));
    const button = h(
      "button",
      {
        type: "button",
        dataset: { action: "rollback" },
        "aria-label": `Roll back to generation ${generation.id}`,
        disabled: current,
        title: current ? "this is the current generation" : "",
      },
      "Roll back",
    );
    button.addEventListener("click", () => rollback(generation, button, problem));
    const engines = generation.engines || [];
    return h(
      "tr",
      { dataset: { generation: String(generation.id), current: String(current) } },
      h("td", {}, h("label", { for: box.id, class: "inline" }, box, h("span", { class: "muted" }, `compare ${generation.id}`))),
      h("td", { dataset: { col: "id" } }, String(generation.id), current ? h("span", { class: "muted" }, " (current)") : null),
      h("td", { title: generation.ts || "" }, when(generation.ts), h("span", { class: "muted" }, ` ${since(generation.ts)} ago`)),
      h("td", { class: "wrap", dataset: { col: "cause" } }, generation.cause || ""),
      generationStateCell(generation),
      h("td", { class: "wrap", dataset: { col: "verdict" } }, generation.verdict || ""),
      h("td", { class: "wrap" }, (generation.presets || []).join(", ")),
      h("td", { dataset: { col: "engines" }, title: engines.map((engine) => engine.id).join(", ") }, String(engines.length)),
      h("td", {}, button, problem.element),
    );
  }

  async function readOnce() {
    const answer = await get(v1(`generations?limit=${SHOWN}`));
    generations = answer.generations || [];
    const newest = generations.length ? generations[0].id : null;
    fill(
      tableBody,
      generations.length
        ? generations.map((generation) => generationRow(generation, generation.id === newest))
        : h("tr", {}, h("td", { colspan: "9", class: "notice" }, "no generation yet: nothing was ever declared")),
    );
    picked = picked.filter((id) => generations.some((generation) => generation.id === id));
    drawDiff();
    listError.clear();
  }

  /** Re-reads the generations; calls during a read make one more read after it. */
  const readCoalesced = coalescing(readOnce);
  const load = () => readCoalesced().catch((error) => listError.show(error));

  const unsubscribe = [
    onStatus((status) => {
      if (status.generation === knownGeneration) return;
      knownGeneration = status.generation;
      load();
    }),
    onEvents((events) => {
      // Verdicts (rollout) and rollbacks change rows without a new generation number.
      if (events.some((event) => ["generation", "rollout", "rollback"].includes(event.type))) load();
    }),
  ];
  if (knownGeneration === null) await load();
  return () => {
    for (const undo of unsubscribe) undo();
    if (stopRollout) stopRollout();
  };
}
