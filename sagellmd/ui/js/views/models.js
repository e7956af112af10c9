// Models: the models on this machine (size, source, last use, the engines using them),
// downloads in the background with their progress live, and deleting a model.

import { del, get, post, v1 } from "../api.js";
import { bytes, coalescing, confirmAction, errorBox, fill, h, since } from "../dom.js";
import { onEvents, onStatus } from "../live.js";
import { engineLink } from "../rollout.js";

// The events a model change or a download's progress comes as (engine: null).
const MODEL_EVENTS = new Set(["model_download", "model_deleted"]);

function modelPath(model) {
  const id = model.id.split("/").map(encodeURIComponent).join("/");
  // Delete the row's own revision when the cache holds several.
  const revision = model.source === "hub-cache" && model.revision ? `?revision=${encodeURIComponent(model.revision)}` : "";
  return v1(`models/local/${id}${revision}`);
}

function revisionText(model) {
  if (!model.revision) return "";
  const refs = (model.refs || []).length ? ` ${model.refs.join(", ")}` : "";
  return `${model.revision.slice(0, 8)}${refs}`;
}

function progressCell(job) {
  const percent = job.total_bytes ? Math.round((100 * job.done_bytes) / job.total_bytes) : null;
  const label = `Progress of ${job.model}`;
  const bar =
    job.state === "running" && percent === null
      ? h("progress", { "aria-label": label })
      : h("progress", { "aria-label": label, max: "100", value: String(job.state === "done" ? 100 : percent ?? 0) });
  const amount = job.total_bytes ? `${percent}% (${bytes(job.done_bytes)} of ${bytes(job.total_bytes)})` : job.done_bytes ? bytes(job.done_bytes) : "";
  return h("td", { dataset: { col: "progress" } }, bar, " ", h("span", { class: "muted" }, amount));
}

export async function render(container) {
  const listError = errorBox();
  const modelsBody = h("tbody");
  const downloadsBody = h("tbody");
  const cacheLine = h("p", { class: "muted", id: "models-cache" });
  const warnings = h("ul", { id: "models-warnings", class: "muted" });
  const idInput = h("input", { id: "download-id", name: "download-id", placeholder: "org/name", autocomplete: "off", spellcheck: "false", required: true });
  const revisionInput = h("input", { id: "download-revision", name: "download-revision", placeholder: "main", autocomplete: "off", spellcheck: "false" });
  const patternsInput = h("input", {
    id: "download-patterns",
    name: "download-patterns",
    placeholder: "*.safetensors, *.json",
    autocomplete: "off",
    spellcheck: "false",
  });
  const downloadButton = h("button", { type: "submit", id: "download-start", class: "primary" }, "Download");
  const downloadError = errorBox();
  downloadError.element.id = "download-error";
  // Messages of download events newer than the last listing, by job id.
  const lastMessage = new Map();
  // A refused delete stays next to its button when the list is drawn again.
  const refusals = new Map();
  const keyOf = (model) => `${model.id}@${model.revision || ""}`;
  let knownGeneration = null;

  const form = h(
    "form",
    { id: "download-form", "aria-labelledby": "download-title" },
    h(
      "div",
      { class: "row" },
      h("label", { for: "download-id" }, "Model id (Hugging Face)", idInput),
      h("label", { for: "download-revision" }, "Revision (optional)", revisionInput),
      h("label", { for: "download-patterns" }, "Only files matching (optional, comma-separated)", patternsInput),
      downloadButton,
    ),
    downloadError.element,
  );

  fill(
    container,
    h("h1", {}, "Models"),
    h(
      "section",
      { "aria-labelledby": "local-title" },
      h("h2", { id: "local-title" }, "On this machine"),
      cacheLine,
      warnings,
      listError.element,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "models" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Model", "Delete", "Size", "Engines", "Last used", "Source", "Kind"].map((t) => h("th", { scope: "col" }, t)),
            ),
          ),
          modelsBody,
        ),
      ),
    ),
    h(
      "section",
      { "aria-labelledby": "download-title" },
      h("h2", { id: "download-title" }, "Download a model"),
      h("p", { class: "muted" }, "The daemon downloads into its own Hugging Face cache, in the background."),
      form,
      h(
        "div",
        { class: "table-wrap", style: { marginTop: "8px" } },
        h(
          "table",
          { id: "downloads" },
          h("thead", {}, h("tr", {}, ["Download", "Model", "State", "Progress", "Message"].map((t) => h("th", { scope: "col" }, t)))),
          downloadsBody,
        ),
      ),
    ),
  );

  async function remove(model, button, problem) {
    problem.clear();
    refusals.delete(keyOf(model));
    const what = model.revision ? `${model.id} (revision ${model.revision.slice(0, 8)}, ${bytes(model.size_bytes)})` : model.id;
    if (!(await confirmAction(`Delete ${what} from the disk?`, "Delete"))) return;
    button.disabled = true;
    try {
      await del(modelPath(model));
      await load();
    } catch (error) {
      refusals.set(keyOf(model), { error, usedBy: JSON.stringify(model.used_by) });
      problem.show(error);
      button.disabled = false;
    }
  }

  function modelRow(model) {
    const problem = errorBox();
    const cell = h("td", { class: "wrap", dataset: { col: "delete" } });
    if (model.deletable) {
      const button = h("button", { type: "button", class: "danger", dataset: { action: "delete" }, "aria-label": `Delete ${model.id}` }, "Delete");
      button.addEventListener("click", () => remove(model, button, problem));
      const refused = refusals.get(keyOf(model));
      // Shown until the engines using the model change (the reason may be gone then).
      if (refused && refused.usedBy === JSON.stringify(model.used_by)) problem.show(refused.error);
      else refusals.delete(keyOf(model));
      cell.append(button, problem.element);
    } else {
      cell.append(h("span", { class: "muted" }, model.note || `kept: ${model.source} models are not deleted here`));
    }
    const usedBy = model.used_by;
    return h(
      "tr",
      { dataset: { model: model.id, revision: model.revision || "", source: model.source } },
      // The id with its revision, and the delete button next to it: narrow screens see both.
      h(
        "td",
        { class: "wrap", title: model.path || "", dataset: { col: "model" } },
        h("strong", {}, model.id),
        model.revision ? h("div", { class: "muted", style: { fontSize: "13px" } }, `revision ${revisionText(model)}`) : null,
      ),
      cell,
      h("td", { dataset: { col: "size" } }, bytes(model.size_bytes)),
      h(
        "td",
        { class: "wrap", dataset: { col: "engines" } },
        (usedBy || []).flatMap((id, index) => (index ? [", ", engineLink(id)] : [engineLink(id)])),
      ),
      h("td", { dataset: { col: "last-used" }, title: model.last_used || "" }, model.last_used ? `${since(model.last_used)} ago` : "never"),
      h("td", { dataset: { col: "source" } }, model.source),
      h("td", { dataset: { col: "kind" } }, model.kind || ""),
    );
  }

  function downloadRow(job) {
    const message = lastMessage.get(job.id) || job.message || "";
    return h(
      "tr",
      { dataset: { download: job.id, model: job.model, state: job.state } },
      h("td", {}, job.id),
      h("td", {}, job.model),
      h("td", { class: "state", dataset: { col: "state", state: job.state === "done" ? "ready" : job.state } }, job.state),
      progressCell(job),
      h("td", { class: "wrap", dataset: { col: "message" } }, message),
    );
  }

  async function readOnce() {
    const answer = await get(v1("models/local"));
    const roots = (answer.model_paths || []).length ? `; models.paths: ${answer.model_paths.join(", ")}` : "";
    fill(cacheLine, `hub cache: ${answer.cache || "(none)"}${roots}`);
    fill(warnings, (answer.warnings || []).map((warning) => h("li", {}, warning)));
    const models = answer.models || [];
    fill(
      modelsBody,
      models.length ? models.map(modelRow) : h("tr", {}, h("td", { colspan: "7", class: "notice" }, "no model on this machine")),
    );
    const jobs = (answer.downloads || []).slice().reverse();
    for (const job of jobs) if (job.state !== "running") lastMessage.delete(job.id);
    fill(
      downloadsBody,
      jobs.length ? jobs.map(downloadRow) : h("tr", {}, h("td", { colspan: "5", class: "notice" }, "no download since the daemon started")),
    );
    listError.clear();
  }

  /** Re-reads the listing; calls during a read make one more read after it. */
  const readCoalesced = coalescing(readOnce);
  const load = () => readCoalesced().catch((error) => listError.show(error));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    downloadError.clear();
    const body = { id: idInput.value.trim() };
    if (revisionInput.value.trim()) body.revision = revisionInput.value.trim();
    const patterns = patternsInput.value.split(",").map((pattern) => pattern.trim()).filter(Boolean);
    if (patterns.length) body.allow_patterns = patterns;
    downloadButton.disabled = true;
    try {
      await post(v1("models/local"), body);
      await load();
    } catch (error) {
      downloadError.show(error);
    } finally {
      downloadButton.disabled = false;
    }
  });

  const unsubscribe = [
    onEvents((events) => {
      const mine = events.filter((event) => MODEL_EVENTS.has(event.type));
      for (const event of mine) {
        const [job, ...rest] = (event.message || "").split(" ");
        if (event.type === "model_download" && job.startsWith("dl-")) lastMessage.set(job, rest.join(" ").replace(/^\S+: /, ""));
      }
      // Engines starting (last use) and the events of downloads and deletions change the list.
      if (mine.length || events.some((event) => event.type === "started")) load();
    }),
    onStatus((status) => {
      // Which engines use a model changes with the desired state.
      if (status.generation === knownGeneration) return;
      knownGeneration = status.generation;
      load();
    }),
  ];
  return () => {
    for (const undo of unsubscribe) undo();
  };
}
