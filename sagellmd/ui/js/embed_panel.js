// The Playground's embeddings: texts embedded through the gateway, each vector's size and
// L2 norm shown (with its first values, to see that they differ).

import { post, v1 } from "./api.js";
import { h, errorBox } from "./dom.js";

const EMBEDDINGS = v1("gateway/openai/v1/embeddings");
const HEADS = ["#", "Text", "Size", "L2 norm", "First values"];
const SHOWN_VALUES = 4;

function firstValues(vector) {
  const shown = vector.slice(0, SHOWN_VALUES).map((value) => value.toFixed(3));
  return `${shown.join(", ")}${vector.length > SHOWN_VALUES ? ", …" : ""}`;
}

export function l2norm(vector) {
  return Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0));
}

export class EmbedPanel {
  constructor(model) {
    this.model = model;
    this.errors = errorBox();
    this.input = h("textarea", { id: "pg-embed-input", rows: 4, placeholder: "one text per line" });
    this.button = h("button", { type: "submit", id: "pg-embed", class: "primary" }, "Embed");
    this.body = h("tbody");
    this.summary = h("p", { class: "muted", id: "pg-embed-summary", role: "status" });
    this.element = h(
      "div",
      { id: "pg-embeddings" },
      h(
        "form",
        { onsubmit: (event) => (event.preventDefault(), this.embed()) },
        h("label", { class: "grow" }, "Texts, one per line", this.input),
        h("div", { class: "row" }, this.button),
        this.errors.element,
      ),
      this.summary,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "pg-embed-results", "aria-label": "Embeddings" },
          h("thead", {}, h("tr", {}, HEADS.map((title) => h("th", { scope: "col" }, title)))),
          this.body,
        ),
      ),
    );
  }

  async embed() {
    const texts = this.input.value.split("\n").map((line) => line.trim()).filter(Boolean);
    const model = this.model();
    this.errors.clear();
    if (!model) return this.errors.show("pick a model first");
    if (!texts.length) return this.errors.show("write at least one text");
    this.button.disabled = true;
    const started = performance.now();
    try {
      const answer = await post(EMBEDDINGS, { model, input: texts });
      const rows = (answer.data || []).map((item) => {
        const vector = Array.isArray(item.embedding) ? item.embedding : [];
        return h(
          "tr",
          { dataset: { index: String(item.index) } },
          h("td", {}, String(item.index)),
          h("td", { class: "wrap" }, texts[item.index] ?? ""),
          h("td", { dataset: { col: "dims" } }, String(vector.length)),
          h("td", { dataset: { col: "norm" } }, l2norm(vector).toFixed(4)),
          h("td", { dataset: { col: "values" } }, h("code", {}, firstValues(vector))),
        );
      });
      this.body.replaceChildren(...rows);
      const ms = Math.round(performance.now() - started);
      const tokens = answer.usage ? `, ${answer.usage.prompt_tokens} tokens` : "";
      const from = answer.model || model;
      this.summary.textContent = `${rows.length} vectors from ${from} in ${ms} ms${tokens}`;
    } catch (error) {
      this.errors.show(error);
    } finally {
      this.button.disabled = false;
    }
  }
}
