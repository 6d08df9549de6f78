// A batch: several picked images (or one image in several variations) sent as one POST
// /batches, followed through the batch's one event stream, each item's result fetched as soon
// as it is done. It stands in the stage and the history where a single edit would.

import { ApiError } from "./api.js";
import { ACTIVE, downloadName, stepPercent } from "./job.js";

const ENDED = new Set(["completed", "failed", "cancelled"]);
const RANK = { submitting: 0, pending: 1, processing: 2 };
let counter = 0;

/** One picture of a batch: its input, its job and what became of it. */
export class BatchItem {
  constructor(input, index) {
    this.input = input;
    this.index = index;
    this.jobId = null;
    this.status = "submitting";
    this.step = 0;
    this.total = 0;
    this.seed = null;
    this.file = null;
    this.error = null;
    this.meta = null;
    this.resultUrl = null;
  }

  get ended() {
    return ENDED.has(this.status);
  }

  get percent() {
    return stepPercent(this);
  }

  /** Its share of the whole batch, 0 to 1: an item that ended counts in full. */
  get share() {
    if (this.ended || this.status === "unsent") return 1;
    return this.total ? Math.min(1, this.step / this.total) : 0;
  }

  /** The name its result downloads under: the zip's entry name once the gateway said it. */
  get downloadName() {
    return this.file ?? downloadName(this);
  }

  /** Moves on to `status`; never back, and never out of an end it reached. */
  moveTo(status) {
    if (this.ended) return;
    if (ENDED.has(status) || (RANK[status] ?? 0) >= (RANK[this.status] ?? 0)) {
      this.status = status;
    }
  }

  apply(event, data) {
    if (event === "queued") this.moveTo("pending");
    else if (event === "started") this.moveTo("processing");
    else if (event === "progress") {
      this.moveTo("processing");
      this.step = Math.max(this.step, data.step ?? 0);
      this.total = data.total ?? this.total;
    } else if (event === "completed") {
      this.moveTo("completed");
      this.meta = data.result ?? this.meta;
      this.seed = this.meta?.seed ?? this.seed;
      this.step = this.total = this.meta?.steps ?? this.total;
    } else if (event === "failed") {
      this.error = data.error ?? { code: "failed", message: "the edit failed" };
      this.moveTo("failed");
    } else if (event === "cancelled") this.moveTo("cancelled");
  }

  /** The item as GET /batches/{id} describes it (BatchJob). */
  applyView(view) {
    this.jobId = view.job_id;
    this.file = view.file ?? this.file;
    this.seed = view.seed ?? this.seed;
    if (view.progress?.total) {
      this.step = Math.max(this.step, view.progress.step ?? 0);
      this.total = view.progress.total;
    }
    if (view.error && !this.error) this.error = view.error;
    if (view.result && !this.meta) this.meta = view.result;
    this.moveTo(view.status);
  }
}

function jsonOf(event) {
  try {
    return JSON.parse(event.data);
  } catch {
    return {};
  }
}

export class BatchRun {
  /** `inputs`: the picked images; `variations`: 0, or N seeds of the one input. */
  constructor(api, inputs, request, variations = 0) {
    this.kind = "batch";
    this.api = api;
    this.inputs = inputs;
    this.request = request;
    this.variations = variations;
    const pictures = variations ? Array.from({ length: variations }, () => inputs[0]) : inputs;
    this.items = pictures.map((input, index) => new BatchItem(input, index));
    this.key = `batch-${++counter}`;
    this.id = null;
    this.status = "submitting";
    this.error = null;
    this.submittedAt = Date.now();
    this.finishedAt = null;
    this.cancelRequested = false;
    this.zipping = false;
    this.listeners = new Set();
    this.stream = new AbortController();
    this.fetches = [];
  }

  /** The first input stands for the batch where one picture is shown (the history). */
  get input() {
    return this.inputs[0];
  }

  get resultUrl() {
    return this.items.find((item) => item.resultUrl)?.resultUrl ?? null;
  }

  get active() {
    return ACTIVE.has(this.status);
  }

  get percent() {
    if (!this.id) return 0;
    const done = this.items.reduce((sum, item) => sum + item.share, 0);
    return Math.round((100 * done) / this.items.length);
  }

  get summary() {
    return this.variations
      ? `${this.variations} variations of ${this.input.name}`
      : `${this.items.length} images`;
  }

  count(status) {
    return this.items.filter((item) => item.status === status).length;
  }

  uses(input) {
    return this.inputs.includes(input);
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  changed() {
    for (const listener of this.listeners) listener(this);
  }

  async run() {
    try {
      const accepted = await this.api.submitBatch({
        files: this.inputs.map((input) => input.file),
        variations: this.variations,
        ...this.request,
      });
      this.id = accepted.batch_id;
      accepted.job_ids.forEach((jobId, index) => {
        this.items[index].jobId = jobId;
        this.items[index].moveTo("pending");
      });
      this.status = accepted.status;
      this.changed();
      if (this.cancelRequested) await this.sendCancel();
      const final = await this.api.batchEvents(this.id, {
        signal: this.stream.signal,
        onEvent: (event) => this.apply(event.event, jsonOf(event)),
      });
      if (final.event === "error") {
        const { code, message } = jsonOf(final);
        throw new Error(`the event stream stopped: ${message} (${code})`);
      }
      // The batch's own account settles anything the stream could not say (an expired job).
      this.applyView(await this.api.batch(this.id));
      await Promise.allSettled(this.fetches);
      this.status = jsonOf(final).status ?? this.settledStatus();
    } catch (error) {
      this.fail(error);
    } finally {
      this.finishedAt = Date.now();
      this.changed();
    }
  }

  apply(event, data) {
    if (event === "batch") {
      if (!data.final && ACTIVE.has(data.status)) this.status = data.status;
    } else if (event === "error" && data.job_id === undefined) {
      // The stream itself failed (the store is out of reach): it ends here.
    } else {
      const item = this.itemOf(data);
      if (!item) return;
      const wasCompleted = item.status === "completed";
      if (event === "error") item.apply("failed", { error: { code: data.code, message: data.message } });
      else item.apply(event, data);
      if (item.status === "completed" && !wasCompleted) this.fetches.push(this.fetchResult(item));
      if (item.status === "processing" && this.status === "pending") this.status = "processing";
    }
    this.changed();
  }

  itemOf(data) {
    return this.items[data.index] ?? this.items.find((item) => item.jobId === data.job_id);
  }

  applyView(view) {
    for (const job of view.jobs) {
      const item = this.items[job.index];
      if (!item) continue;
      const wasCompleted = item.status === "completed";
      item.applyView(job);
      if (item.status === "completed" && !wasCompleted) this.fetches.push(this.fetchResult(item));
    }
    this.changed();
  }

  async fetchResult(item) {
    try {
      const blob = await this.api.result(item.jobId);
      item.resultUrl = URL.createObjectURL(blob);
    } catch (error) {
      item.error = { code: error.code ?? "page_error", message: `could not fetch the result: ${error.message}` };
    }
    this.changed();
  }

  /** The batch's status from its items, as the gateway names it. */
  settledStatus() {
    if (this.count("completed") === this.items.length) return "completed";
    if (this.count("completed")) return "partial";
    return this.count("cancelled") ? "cancelled" : "failed";
  }

  async cancel() {
    if (!this.active || this.cancelRequested) return;
    this.cancelRequested = true;
    this.changed();
    if (this.id) await this.sendCancel();
  }

  async sendCancel() {
    try {
      // Waiting items are cancelled at once; a running one stops at its next step, and the
      // event stream then says so.
      this.applyView(await this.api.cancelBatch(this.id));
    } catch (error) {
      // 409: the batch ended first; its final event tells how.
      if (!(error instanceof ApiError && error.status === 409)) this.fail(error);
    }
  }

  /** The zip of every result, as the gateway packs it: {blob, name}. */
  async zip() {
    this.zipping = true;
    this.changed();
    try {
      return await this.api.batchZip(this.id);
    } finally {
      this.zipping = false;
      this.changed();
    }
  }

  fail(error) {
    if (!this.active) return;
    this.status = "failed";
    if (error instanceof ApiError) {
      this.error = { code: error.code, message: error.message, status: error.status };
    } else {
      const where = this.id ? `; batch ${this.id} may still be running (GET /batches/${this.id})` : "";
      this.error = { code: "page_error", message: `${error.message || error}${where}` };
    }
    for (const item of this.items) {
      if (item.status === "submitting") item.status = "unsent";
    }
    this.stream.abort();
  }

  /** A new batch of the same images and settings. */
  again() {
    return new BatchRun(this.api, this.inputs, this.request, this.variations);
  }
}
