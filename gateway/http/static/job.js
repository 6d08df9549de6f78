// One edit: submitted as a job, followed through its events, and its result fetched. The stage
// shows one at a time and the history lists them all, so several can be in flight at once.

import { ApiError } from "./api.js";

const QUEUE_POLL_MS = 2000;
export const ACTIVE = new Set(["submitting", "pending", "processing"]);
const EXTENSIONS = { png: "png", webp: "webp", jpeg: "jpg" };
let counter = 0;

/** An edit's progress in per cent: its steps so far, 100 once it completed. */
export function stepPercent({ status, step, total }) {
  if (status === "completed") return 100;
  return total ? Math.round((100 * step) / total) : 0;
}

/** The name an edit's result downloads under: its input's stem, "-edited", its format. */
export function downloadName({ input, meta }) {
  const stem = input.name.replace(/\.[^.]*$/, "") || "image";
  return `${stem}-edited.${EXTENSIONS[meta?.format] ?? "png"}`;
}

/** The options the API takes, with the empty ones left out (the model's defaults apply). */
export function editOptions({ preset, steps, trueCfgScale, seed, outputFormat }) {
  const options = {};
  if (preset) options.preset = preset;
  if (steps !== "") options.steps = Number(steps);
  if (trueCfgScale !== "") options.true_cfg_scale = Number(trueCfgScale);
  if (seed !== "") options.seed = Number(seed);
  if (outputFormat) options.output_format = outputFormat;
  return options;
}

export class EditJob {
  /** `input` is a picked image: {file, url, name}; `request` is what retry sends again. */
  constructor(api, input, request) {
    this.api = api;
    this.input = input;
    this.request = request;
    this.key = `edit-${++counter}`;
    this.id = null;
    this.status = "submitting";
    this.step = 0;
    this.total = 0;
    this.position = null;
    this.etaS = null;
    this.error = null;
    this.meta = null;
    this.resultUrl = null;
    this.submittedAt = Date.now();
    this.finishedAt = null;
    this.cancelRequested = false;
    this.listeners = new Set();
    this.stream = new AbortController();
    this.queueTimer = null;
  }

  get active() {
    return ACTIVE.has(this.status);
  }

  get percent() {
    return stepPercent(this);
  }

  /** What it edits, in a word (the history lists it). */
  get summary() {
    return this.input.name;
  }

  uses(input) {
    return this.input === input;
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  changed() {
    for (const listener of this.listeners) listener(this);
  }

  async run() {
    try {
      const accepted = await this.api.submit({ file: this.input.file, ...this.request });
      this.id = accepted.job_id;
      this.status = accepted.status;
      this.changed();
      if (this.cancelRequested) await this.sendCancel();
      await this.api.events(this.id, {
        signal: this.stream.signal,
        onEvent: (event) => this.apply(event.event, JSON.parse(event.data)),
      });
      if (this.status === "completed") {
        const blob = await this.api.result(this.id);
        this.resultUrl = URL.createObjectURL(blob);
      }
    } catch (error) {
      this.fail(error);
    } finally {
      this.stopQueuePoll();
      this.finishedAt = Date.now();
      this.changed();
    }
  }

  apply(event, data) {
    if (event === "queued") {
      this.status = "pending";
      this.setQueue(data.position, data.eta_s);
      if (data.position > 0) this.startQueuePoll();
    } else if (event === "started") {
      this.status = "processing";
      this.stopQueuePoll();
    } else if (event === "progress") {
      this.status = "processing";
      this.step = data.step;
      this.total = data.total;
    } else if (event === "completed") {
      this.status = "completed";
      this.meta = data.result;
      this.step = this.total = data.result?.steps ?? this.total;
    } else if (event === "failed") {
      this.status = "failed";
      this.error = data.error ?? { code: "failed", message: "the edit failed" };
    } else if (event === "cancelled") {
      this.status = "cancelled";
    }
    this.changed();
  }

  setQueue(position, etaS) {
    this.position = position ?? null;
    this.etaS = etaS ?? null;
  }

  // The event stream says "queued" once; while waiting, the job's status has the live place.
  startQueuePoll() {
    if (this.queueTimer) return;
    this.queueTimer = setInterval(async () => {
      try {
        const view = await this.api.job(this.id);
        if (this.status !== "pending") return;
        this.setQueue(view.queue_position, view.eta_s);
        this.changed();
      } catch {
        // the event stream reports what matters; a missed poll only leaves an older position
      }
    }, QUEUE_POLL_MS);
  }

  stopQueuePoll() {
    clearInterval(this.queueTimer);
    this.queueTimer = null;
  }

  async cancel() {
    if (!this.active || this.cancelRequested) return;
    this.cancelRequested = true;
    this.changed();
    if (this.id) await this.sendCancel();
  }

  async sendCancel() {
    try {
      const view = await this.api.cancel(this.id);
      // A queued job is cancelled at once; a running one stops at its next step, and the
      // event stream then says so.
      if (view.status === "cancelled") this.apply("cancelled", {});
    } catch (error) {
      // 409: it finished first; its own final event tells how.
      if (!(error instanceof ApiError && error.status === 409)) this.fail(error);
    }
  }

  fail(error) {
    const settled = ["failed", "cancelled"].includes(this.status)
      || (this.status === "completed" && this.resultUrl);
    if (settled) return;
    this.status = "failed";
    if (error instanceof ApiError) {
      this.error = { code: error.code, message: error.message, status: error.status };
    } else {
      const where = this.id ? `; job ${this.id} may still be running (GET /jobs/${this.id})` : "";
      this.error = { code: "page_error", message: `${error.message || error}${where}` };
    }
    this.stream.abort();
  }

  /** A new job with the same image and settings. */
  again() {
    return new EditJob(this.api, this.input, this.request);
  }
}
