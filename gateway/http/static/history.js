// This tab's edits and batches, newest first; choosing one shows it on the stage again.

import { el } from "./dom.js";

const LABELS = {
  submitting: "uploading",
  pending: "queued",
  processing: "running",
  completed: "done",
  partial: "partly done",
  failed: "failed",
  cancelled: "cancelled",
};

export class History {
  constructor({ list, empty, onSelect }) {
    this.list = list;
    this.empty = empty;
    this.onSelect = onSelect;
    this.jobs = [];
    this.current = null;
  }

  add(job) {
    this.jobs.unshift(job);
    job.onChange(() => this.render());
    this.render();
  }

  uses(input) {
    return this.jobs.some((job) => job.uses(input));
  }

  select(job) {
    this.current = job;
    this.render();
  }

  render() {
    const focused = document.activeElement?.dataset.key;
    this.empty.hidden = this.jobs.length > 0;
    this.list.replaceChildren(...this.jobs.map((job) => this.row(job)));
    if (focused) this.list.querySelector(`[data-key="${focused}"]`)?.focus();
  }

  row(job) {
    const picture = job.resultUrl || (job.input.previewable !== false ? job.input.url : null);
    const button = el(
      "button",
      {
        type: "button",
        class: "history-item",
        "data-key": job.key,
        "data-status": job.status,
        "data-kind": job.kind ?? "edit",
        "aria-current": job === this.current ? "true" : false,
      },
      picture ? el("img", { src: picture, alt: "" }) : el("span", { class: "thumb-placeholder" }, "?"),
      el(
        "span",
        { class: "history-text" },
        el("span", { class: "history-prompt" }, job.request.prompt || "(no instruction)"),
        el("span", { class: "note" }, `${job.request.model || "default model"} · ${job.summary}`),
      ),
      el("span", { class: `badge ${job.status}` }, LABELS[job.status] ?? job.status),
    );
    button.addEventListener("click", () => this.onSelect(job));
    return el("li", {}, button);
  }
}
