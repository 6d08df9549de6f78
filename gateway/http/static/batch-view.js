// A batch on the stage: one card per item, with its picture (the input, then its result), its
// own progress bar and status, its own error, and a link to save its result alone. The cards are
// built once per batch and updated in place, so the pictures don't reload on every event.

import { el, show } from "./dom.js";

function itemStatus(item) {
  switch (item.status) {
    case "submitting":
      return "Uploading…";
    case "unsent":
      return "Not sent.";
    case "pending":
      return "Queued.";
    case "processing":
      return item.total ? `Step ${item.step} of ${item.total}…` : "Started…";
    case "completed":
      return item.resultUrl ? "Done." : "Done; fetching the result…";
    case "cancelled":
      return item.step ? `Cancelled after step ${item.step} of ${item.total}.` : "Cancelled.";
    case "failed":
      return "Failed.";
    default:
      return item.status;
  }
}

function title(item, variations) {
  if (variations) return item.seed !== null ? `seed ${item.seed}` : `variation ${item.index + 1}`;
  return item.input.name;
}

export class BatchView {
  constructor(list) {
    this.list = list;
    this.job = null;
    this.cards = [];
  }

  render(job) {
    show(this.list, Boolean(job));
    if (!job) {
      this.job = null;
      this.list.replaceChildren();
      return;
    }
    if (job !== this.job) this.build(job);
    job.items.forEach((item, index) => this.update(this.cards[index], item, job));
  }

  build(job) {
    this.job = job;
    this.cards = job.items.map((item) => this.card(item, job));
    this.list.replaceChildren(...this.cards.map((card) => card.node));
  }

  card(item, job) {
    const name = title(item, job.variations);
    const card = {
      picture: el("div", { class: "batch-picture" }),
      name: el("span", { class: "batch-name", title: item.input.name }, name),
      status: el("span", { class: "note batch-status" }),
      progress: el("progress", { class: "batch-progress", max: "100", value: "0", "aria-label": `${name}: progress` }),
      error: el("p", { class: "batch-error", "data-testid": "batch-item-error", hidden: true }),
      save: el("a", { class: "batch-save", hidden: true }, "Save"),
      shown: null,
    };
    card.node = el(
      "li",
      { class: "batch-item", "data-testid": "batch-item", "data-index": item.index },
      card.picture,
      el("div", { class: "batch-text" }, card.name, card.status),
      card.progress,
      card.error,
      card.save,
    );
    return card;
  }

  update(card, item, job) {
    card.node.dataset.status = item.status;
    card.node.dataset.jobId = item.jobId ?? "";
    if (job.variations) card.name.textContent = title(item, true);
    this.picture(card, item);
    card.status.textContent = itemStatus(item);
    card.progress.value = item.percent;
    card.progress.setAttribute("aria-valuetext", `${item.percent} %`);
    card.error.replaceChildren();
    if (item.error) {
      card.error.append(item.error.message, " ", el("span", { class: "error-code" }, item.error.code));
    }
    show(card.error, Boolean(item.error));
    show(card.save, Boolean(item.resultUrl));
    if (item.resultUrl) {
      card.save.href = item.resultUrl;
      card.save.download = item.downloadName;
      card.save.setAttribute("aria-label", `Save ${item.downloadName}`);
    }
  }

  // The input while it runs, its result once there; a file with no preview shows a mark.
  picture(card, item) {
    const url = item.resultUrl ?? (item.input.previewable !== false ? item.input.url : null);
    if (card.shown === url) return;
    card.shown = url;
    if (item.resultUrl) {
      card.picture.replaceChildren(
        el("img", { src: url, alt: `${item.input.name}, edited`, "data-testid": "batch-result" }),
      );
    } else if (url) {
      card.picture.replaceChildren(el("img", { src: url, alt: "", class: "batch-input" }));
    } else {
      card.picture.replaceChildren(el("span", { class: "thumb-placeholder", "aria-hidden": "true" }, "?"));
    }
  }
}
