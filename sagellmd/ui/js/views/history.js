// TODO(history view): written by a helper.
import { h } from "../dom.js";

export function render(container) {
  container.append(h("p", { class: "notice" }, "the history view is not built yet"));
}
