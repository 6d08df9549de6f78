// The result area: the input, then the job's live progress, then the result beside the input
// on a before/after slider, with Cancel, Retry and Download. A batch shows its items instead of
// the slider, with the overall progress and a zip of every result. A local edit's result has the
// input's size, so before and after line up in the same frame.

import { BatchView } from "./batch-view.js";
import { formatSeconds, show } from "./dom.js";
import { downloadName } from "./job.js";


function statusText(job) {
  switch (job.status) {
    case "submitting":
      return job.cancelRequested ? "Cancelling…" : "Uploading…";
    case "pending": {
      if (job.cancelRequested) return "Cancelling…";
      if (!job.position) return "Queued: starting now.";
      const eta = job.etaS ? `, done in about ${formatSeconds(job.etaS)}` : "";
      return `Queued: position ${job.position}${eta}.`;
    }
    case "processing": {
      if (job.cancelRequested) return "Cancelling: the model stops after this step…";
      return job.total ? `Step ${job.step} of ${job.total}…` : "Started…";
    }
    case "completed":
      return `Done${took(job)}.`;
    case "cancelled":
      return job.step ? `Cancelled after step ${job.step} of ${job.total}.` : "Cancelled.";
    case "failed":
      return "Failed.";
    default:
      return "";
  }
}

function took(job) {
  return job.finishedAt ? ` in ${formatSeconds((job.finishedAt - job.submittedAt) / 1000)}` : "";
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function batchEndText(job) {
  const total = job.items.length;
  const others = [
    job.count("failed") && `${job.count("failed")} failed`,
    job.count("cancelled") && `${job.count("cancelled")} cancelled`,
  ].filter(Boolean);
  const rest = others.length ? `; ${others.join(", ")}` : "";
  switch (job.status) {
    case "completed":
      return `All ${plural(total, "edit")} done${took(job)}.`;
    case "partial":
      return `${job.count("completed")} of ${total} done${took(job)}${rest}.`;
    case "cancelled":
      return `Cancelled: none of the ${plural(total, "edit")} done${rest}.`;
    default:
      return job.id ? `Failed: none of the ${plural(total, "edit")} done${rest}.` : "Failed.";
  }
}

function batchStatusText(job) {
  const total = job.items.length;
  if (job.active && job.cancelRequested) return "Cancelling: running edits stop after their step…";
  switch (job.status) {
    case "submitting":
      return job.variations ? "Uploading…" : `Uploading ${plural(total, "image")}…`;
    case "pending":
      return `Queued: ${plural(total, "edit")}.`;
    case "processing":
      return `${job.items.filter((item) => item.ended).length} of ${total} finished…`;
    default:
      return batchEndText(job);
  }
}

function batchMetaText(job) {
  const parts = [job.request.model || "default model", job.summary];
  if (job.id) parts.push(`batch ${job.id}`);
  return parts.join(" · ");
}

function metaText(job) {
  const meta = job.meta;
  if (!meta) return job.id ? `job ${job.id}` : "";
  const parts = [meta.model, `${meta.steps} step${meta.steps === 1 ? "" : "s"}`];
  if (meta.seed !== null && meta.seed !== undefined) parts.push(`seed ${meta.seed}`);
  parts.push(`${meta.width}×${meta.height}`, meta.format);
  if (meta.operations?.length) parts.push(meta.operations.join(", "));
  if (meta.local) {
    const [x, y, width, height] = meta.local.crop;
    parts.push(`local edit, crop ${width}×${height} at ${x},${y}`);
  }
  if (meta.random_weights) parts.push("random weights: the pixels mean nothing");
  parts.push(`job ${job.id}`);
  return parts.join(" · ");
}

export class Stage {
  constructor(elements) {
    this.e = elements;
    this.job = null;
    this.input = null;
    this.batchView = new BatchView(elements.batch);
    this.onPicture = () => {};
    elements.split.addEventListener("input", () => this.setSplit(elements.split.value));
    this.setSplit(elements.split.value);
    elements.result.addEventListener("load", () => this.fit(elements.result));
    elements.before.addEventListener("load", () => {
      if (this.e.compare.dataset.view === "preview") this.fit(elements.before);
    });
  }

  setSplit(percent) {
    this.e.compare.style.setProperty("--split", `${percent}%`);
  }

  // The frame takes the shape of the image shown last, so neither is cropped.
  fit(image) {
    if (image.naturalWidth && image.naturalHeight) {
      this.e.compare.style.setProperty("--ratio", `${image.naturalWidth} / ${image.naturalHeight}`);
    }
  }

  /** Shows a picked image before any edit of it. */
  showInput(input) {
    this.job = null;
    this.input = input;
    this.render();
  }

  showJob(job) {
    this.job = job;
    this.input = job.input;
    this.render();
  }

  /** Whether the stage shows an input alone: no result, no batch. */
  get previewing() {
    return !this.batch && this.e.compare.dataset.view === "preview";
  }

  get batch() {
    return this.job?.kind === "batch" ? this.job : null;
  }

  render() {
    const { e, job } = this;
    const cancelFocused = document.activeElement === e.cancel;
    this.renderPicture();
    e.stage.dataset.jobId = job?.id ?? "";
    e.stage.dataset.status = job?.status ?? "";
    e.stage.dataset.kind = job?.kind ?? "edit";
    this.renderRun();
    // Cancel vanishes when the job ends; keyboard focus moves on to what comes next.
    if (cancelFocused && e.cancel.hidden) {
      [e.retry, e.download, e.zip, e.process].find((node) => !node.hidden)?.focus();
    }
  }

  /** The single edit's before/after, or the batch's items. */
  renderPicture() {
    const { e, job, input, batch } = this;
    this.batchView.render(batch);
    show(e.compare, !batch);
    const hasResult = !batch && Boolean(job?.resultUrl);
    const previewable = input && input.previewable !== false;
    e.compare.dataset.view = hasResult ? "compare" : previewable ? "preview" : "empty";
    e.empty.textContent = input
      ? `${input.name} has no preview; the gateway will say whether it takes it.`
      : "Pick an image to see it here.";
    if (input && e.before.getAttribute("src") !== input.url) e.before.src = input.url;
    if (!input) e.before.removeAttribute("src");
    if (hasResult && e.result.getAttribute("src") !== job.resultUrl) e.result.src = job.resultUrl;
    if (!hasResult) e.result.removeAttribute("src");
    show(e.slider, hasResult);
    this.onPicture();
  }

  /** Progress, status, error, the actions and the facts of the result. */
  renderRun() {
    const { e, job, input, batch } = this;
    const hasResult = !batch && Boolean(job?.resultUrl);
    e.progress.value = job ? job.percent : 0;
    e.progress.setAttribute("aria-valuetext", job ? `${job.percent} %` : "not started");
    e.status.textContent = batch
      ? batchStatusText(batch)
      : job ? statusText(job) : input ? "Ready to process." : "Nothing running.";

    // A batch's own error (refused, or its stream lost); its items' errors are on the items.
    const error = batch || job?.status === "failed" ? job.error : null;
    e.error.replaceChildren();
    if (error) {
      const code = document.createElement("span");
      code.className = "error-code";
      code.textContent = error.code;
      e.error.append(error.message, " ", code);
    }
    show(e.error, Boolean(error));

    show(e.cancel, Boolean(job?.active));
    e.cancel.disabled = Boolean(job?.cancelRequested);
    show(e.retry, job?.status === "failed" || job?.status === "cancelled");
    show(e.download, hasResult);
    if (hasResult) {
      e.download.href = job.resultUrl;
      e.download.download = downloadName(job);
    }
    show(e.zip, Boolean(batch && !batch.active && batch.count("completed")));
    e.zip.setAttribute("aria-disabled", batch?.zipping ? "true" : "false");
    e.zip.textContent = batch?.zipping ? "Preparing the zip…" : "Download zip";
    e.meta.textContent = batch ? batchMetaText(batch) : job ? metaText(job) : "";
  }

  /** A message of the page itself (there is nothing to send yet), in the error area. */
  showMessage(message) {
    this.e.error.replaceChildren(message);
    show(this.e.error, true);
  }
}
