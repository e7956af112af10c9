// Presets: the built-in, file and active ones, a preset's YAML, applying one (or an edited
// or pasted document) after its dry-run plan, its rollout live, and unsetting one.

import { api, del, get, v1 } from "../api.js";
import { confirmAction, errorBox, fill, h } from "../dom.js";
import { onStatus } from "../live.js";
import { followRollout, planTable } from "../rollout.js";
import { toYaml } from "../yaml.js";

const YAML = "application/yaml";
// The top-level `name:` of a YAML document (indented names belong to engines).
const TOP_NAME = /^name:[ \t]*["']?([a-z0-9][a-z0-9-]*)["']?[ \t]*(#.*)?$/m;

function presetPath(name, dryRun) {
  return v1(`presets/${encodeURIComponent(name)}${dryRun ? "?dry_run=true" : ""}`);
}

/** PUT of a preset: without a body the built-in or file preset of that name. */
function setPreset(change, dryRun) {
  const path = presetPath(change.name, dryRun);
  if (change.yaml === undefined) return api("PUT", path);
  return api("PUT", path, { body: change.yaml, contentType: YAML });
}

export async function render(container) {
  const listError = errorBox();
  const tableBody = h("tbody");
  const viewer = h("section", { id: "preset-show", "aria-label": "Preset document", hidden: true });
  const nameInput = h("input", { id: "preset-name", name: "preset-name", autocomplete: "off", spellcheck: "false" });
  const editor = h("textarea", {
    id: "preset-yaml",
    name: "preset-yaml",
    rows: 14,
    spellcheck: "false",
    placeholder: "version: 1\nname: my-preset\nengines:\n  - name: chat\n    model: Qwen/Qwen2.5-1.5B-Instruct",
  });
  const editorError = errorBox();
  editorError.element.id = "preset-error";
  const dryRunButton = h("button", { type: "button", id: "preset-dry-run", class: "primary" }, "Dry run");
  const planArea = h("section", { id: "plan-section", "aria-label": "Plan", hidden: true });
  const rolloutArea = h("div", { id: "rollout-area" });
  let stopRollout = null;
  let shownGeneration = null;

  editor.addEventListener("input", () => {
    const found = TOP_NAME.exec(editor.value);
    if (found) nameInput.value = found[1];
    // A plan of the editor's text is stale once the text changes: dry-run it again.
    if (planArea.dataset.from === "editor") hidePlan();
  });

  const listSection = h(
    "section",
    { "aria-labelledby": "presets-title" },
    h("h2", { id: "presets-title" }, "Built-in, file and active presets"),
    listError.element,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "presets" },
        h(
          "thead",
          {},
          h("tr", {}, ["Preset", "Actions", "Source", "Active", "Engines"].map((t) => h("th", { scope: "col" }, t))),
        ),
        tableBody,
      ),
    ),
  );
  const editorSection = h(
    "section",
    { "aria-labelledby": "editor-title" },
    h("h2", { id: "editor-title" }, "Apply a preset document"),
    h(
      "p",
      { class: "muted" },
      "Paste or edit a preset document (YAML). A dry run shows the plan first; nothing changes until you apply it.",
    ),
    h("div", { class: "row" }, h("label", { for: "preset-name" }, "Preset name", nameInput)),
    h("label", { for: "preset-yaml", style: { display: "flex", marginTop: "8px" } }, "Preset document (YAML)", editor),
    editorError.element,
    h("div", { class: "row" }, dryRunButton),
  );
  fill(container, h("h1", {}, "Presets"), listSection, viewer, editorSection, planArea, rolloutArea);

  function hidePlan() {
    planArea.hidden = true;
    delete planArea.dataset.from;
    fill(planArea);
  }

  /** The dry run of `change`; its plan (shown after `anchor`) with the button that applies it. */
  async function dryRun(change, problem, anchor) {
    problem.clear();
    hidePlan();
    let answer;
    try {
      answer = await setPreset(change, true);
    } catch (error) {
      problem.show(error);
      return;
    }
    const applyError = errorBox();
    const apply = h("button", { type: "button", id: "plan-apply", class: "primary" }, `Apply ${change.name}`);
    const cancel = h("button", { type: "button", id: "plan-cancel" }, "Cancel");
    cancel.addEventListener("click", hidePlan);
    apply.addEventListener("click", async () => {
      apply.disabled = true;
      applyError.clear();
      try {
        const done = await setPreset(change, false);
        hidePlan();
        showRollout(done.generation, (done.plan || []).map((item) => item.engine), anchor);
      } catch (error) {
        applyError.show(error);
        apply.disabled = false;
      }
    });
    fill(
      planArea,
      h("h2", {}, `Plan for preset ${change.name}`),
      h("p", { class: "muted" }, `dry run against generation ${answer.generation}`),
      planTable(answer.plan || []),
      h("div", { class: "row", style: { marginTop: "8px" } }, apply, cancel),
      applyError.element,
    );
    anchor.after(planArea);
    planArea.dataset.from = anchor === editorSection ? "editor" : "list";
    planArea.hidden = false;
    planArea.scrollIntoView({ block: "nearest" });
    apply.focus();
  }

  // The rollout is shown after what started it (the list, the shown preset or the editor).
  function showRollout(generation, engines, anchor) {
    if (stopRollout) stopRollout();
    anchor.after(rolloutArea);
    stopRollout = followRollout(rolloutArea, generation, engines);
    rolloutArea.scrollIntoView({ block: "nearest" });
  }

  async function showPreset(name) {
    const problem = errorBox();
    fill(viewer, h("h2", {}, `Preset ${name}`), h("p", { class: "muted" }, "loading…"));
    viewer.hidden = false;
    let preset;
    try {
      preset = await get(presetPath(name, false));
    } catch (error) {
      problem.show(error);
      fill(viewer, h("h2", {}, `Preset ${name}`), problem.element);
      return;
    }
    const yaml = toYaml(preset.document);
    const apply = h("button", { type: "button", id: "show-dry-run", class: "primary" }, `Dry run: apply ${name}`);
    const edit = h("button", { type: "button", id: "show-edit" }, "Edit a copy");
    // Unedited, a built-in or file preset is applied by name (it stays "builtin"/"file").
    const change = preset.source === "builtin" || preset.source === "file" ? { name } : { name, yaml };
    apply.addEventListener("click", () => dryRun(change, problem, viewer));
    edit.addEventListener("click", () => {
      editor.value = yaml;
      nameInput.value = name;
      editor.focus();
    });
    fill(
      viewer,
      h("h2", {}, `Preset ${name}`),
      h("p", { class: "muted" }, `source: ${preset.source}${preset.active ? ", active" : ""}`),
      h("pre", { id: "preset-yaml-view", tabindex: "0", "aria-label": `YAML of preset ${name}` }, yaml),
      h("div", { class: "row", style: { marginTop: "8px" } }, apply, edit),
      problem.element,
    );
    viewer.scrollIntoView({ block: "nearest" });
  }

  async function unset(name, problem) {
    problem.clear();
    if (!(await confirmAction(`Unset preset ${name}? Its engines are stopped and removed.`, `Unset ${name}`))) return;
    try {
      const done = await del(presetPath(name, false));
      showRollout(done.generation, (done.plan || []).map((item) => item.engine), listSection);
    } catch (error) {
      problem.show(error);
    }
  }

  function presetRow(preset) {
    const problem = errorBox();
    const show = h("button", { type: "button", dataset: { action: "show" }, "aria-label": `Show preset ${preset.name}` }, "Show");
    show.addEventListener("click", () => showPreset(preset.name));
    const actions = h("td", {}, h("div", { class: "row", style: { flexWrap: "nowrap" } }, show));
    if (preset.active) {
      const unsetButton = h(
        "button",
        { type: "button", class: "danger", dataset: { action: "unset" }, "aria-label": `Unset preset ${preset.name}` },
        "Unset",
      );
      unsetButton.addEventListener("click", () => unset(preset.name, problem));
      actions.firstChild.append(unsetButton);
    }
    actions.append(problem.element);
    return h(
      "tr",
      { dataset: { preset: preset.name, active: String(Boolean(preset.active)) } },
      // The description under the name, and the actions next to it: narrow screens see both.
      h(
        "td",
        { class: "wrap", dataset: { col: "name" } },
        h("strong", {}, preset.name),
        preset.description ? h("div", { class: "muted", style: { fontSize: "13px" } }, preset.description) : null,
      ),
      actions,
      h("td", { dataset: { col: "source" } }, preset.source),
      h("td", { dataset: { col: "active" } }, preset.active ? "active" : ""),
      h("td", { class: "wrap" }, (preset.engines || []).join(", ")),
    );
  }

  async function loadPresets() {
    try {
      const answer = await get(v1("presets"));
      fill(tableBody, (answer.presets || []).map(presetRow));
      listError.clear();
    } catch (error) {
      listError.show(error);
    }
  }

  dryRunButton.addEventListener("click", () => {
    const name = nameInput.value.trim();
    if (!name) {
      editorError.show("give the preset's name (the document's `name`)");
      nameInput.focus();
      return;
    }
    dryRun({ name, yaml: editor.value }, editorError, editorSection);
  });

  // Active presets change with every generation: re-read the list when it moves on.
  const unsubscribe = onStatus((status) => {
    if (status.generation === shownGeneration) return;
    shownGeneration = status.generation;
    loadPresets();
  });
  return () => {
    unsubscribe();
    if (stopRollout) stopRollout();
  };
}
