// The playground: pick images, describe the edit, watch it run, compare, download. Several
// picked images (or one in several variations) go as one batch. A mask painted over one image's
// preview (or a region typed in) makes its edits local.

import { Api, ApiError } from "./api.js";
import { BatchRun } from "./batch.js";
import { saveBlob } from "./dom.js";
import { History } from "./history.js";
import { EditJob, editOptions } from "./job.js";
import { MaskTool } from "./mask-tool.js";
import { ModelForm } from "./models.js";
import { Picker } from "./picker.js";
import { Stage } from "./stage.js";

const HEALTH_POLL_MS = 10000;
const $ = (id) => document.getElementById(id);

const api = new Api();
const stage = new Stage({
  stage: $("stage"),
  compare: $("compare"),
  empty: $("compare-empty"),
  before: $("before-image"),
  result: $("result-image"),
  slider: $("compare-slider"),
  split: $("split"),
  progress: $("progress"),
  status: $("status"),
  error: $("error"),
  cancel: $("cancel"),
  retry: $("retry"),
  download: $("download"),
  zip: $("batch-zip"),
  batch: $("batch-items"),
  meta: $("result-meta"),
  process: $("process"),
});
const form = new ModelForm({
  model: $("model"),
  preset: $("preset"),
  format: $("output-format"),
  steps: $("steps"),
  cfg: $("cfg"),
  seed: $("seed"),
  negative: $("negative-prompt"),
  warning: $("model-warning"),
  advancedNote: $("advanced-note"),
  vocabulary: $("vocabulary"),
  vocabularyModel: $("vocabulary-model"),
  vocabularyList: $("vocabulary-list"),
  fileInput: $("file-input"),
  fileNote: $("file-note"),
  variations: $("variations"),
  variationsField: $("variations-field"),
});
const maskTool = new MaskTool({
  panel: $("mask-tool"),
  canvas: $("mask-canvas"),
  brush: $("mask-brush"),
  eraser: $("mask-eraser"),
  rectangle: $("mask-rect"),
  clear: $("mask-clear"),
  invert: $("mask-invert"),
  size: $("mask-size"),
  sizeValue: $("mask-size-value"),
  note: $("mask-note"),
  region: ["region-x", "region-y", "region-w", "region-h"].map($),
});
const history = new History({
  list: $("history"),
  empty: $("history-empty"),
  onSelect: (job) => showJob(job),
});
const picker = new Picker({
  input: $("file-input"),
  dropzone: $("dropzone"),
  list: $("picked"),
  onChange: (item) => {
    if (!stage.job?.active) stage.showInput(item);
  },
});
picker.inUse = (item) => history.uses(item);
picker.onItems = () => {
  updateProcess();
  updateMaskTool();
};
stage.onPicture = () => updateMaskTool();
maskTool.onChange = () => updateProcess();
// Marking a mask under a finished result brings the input back to mark it on.
maskTool.onUse = () => {
  if (!stage.previewing && !stage.job?.active) stage.showInput(picker.selected);
};

let healthState = { auth: false, models: {} };

function showJob(job) {
  history.select(job);
  stage.showJob(job);
  updateProcess();
}

/** How many variations of one image are asked for: 0 when none (or several images). */
function variationsWanted() {
  const wanted = Number(form.values().variations);
  return picker.items.length === 1 && wanted > 1 ? Math.floor(wanted) : 0;
}

/** What Process will do, in words. */
function processNote(count, variations, local) {
  if (count > 1) return `Edits all ${count} picked images as one batch; remove some to edit fewer.`;
  const what = local ? "the marked part of the image" : "the image";
  if (variations) return `Edits ${what} ${variations} times, each with its own seed, as one batch.`;
  return local ? "Edits the marked part of the selected image." : "Edits the selected image.";
}

/** The mask tool marks the one picked image, on its preview; a batch of several has none. */
function updateMaskTool() {
  const single = picker.items.length === 1 && stage.input === picker.selected;
  maskTool.show(single ? stage.input : null, stage.previewing);
}

function updateProcess() {
  const count = picker.items.length;
  $("process").disabled = Boolean(stage.job?.active);
  $("process").textContent = count > 1 ? `Process ${count} images` : "Process";
  const local = count === 1 && maskTool.marks(picker.selected) !== "";
  $("process-note").textContent = processNote(count, variationsWanted(), local);
  $("variations").disabled = count > 1;
  $("variations-note").textContent = count > 1
    ? "Variations take one image: pick a single one."
    : "Edits one image with as many seeds, as a batch.";
}

function start(job) {
  job.onChange(() => {
    if (stage.job === job) stage.render();
    updateProcess();
  });
  history.add(job);
  showJob(job);
  // On a phone the stage sits below the form: bring the progress into view.
  const { top } = $("stage").getBoundingClientRect();
  if (top > window.innerHeight * 0.6) $("stage").scrollIntoView({ block: "start" });
  job.run();
}

/** The mask or region of a single image's edit: {mask}, {region}, {}; null if it cannot go. */
async function localEdit(input) {
  const problem = maskTool.problem(input);
  if (problem) {
    stage.showMessage(problem);
    maskTool.focusRegion();
    return null;
  }
  try {
    return await maskTool.fields(input);
  } catch (error) {
    stage.showMessage(`Could not read the mask: ${error.message}`);
    return null;
  }
}

async function process() {
  const input = picker.selected;
  const inputs = [...picker.items];
  if (!input) {
    stage.showInput(null);
    stage.showMessage("Pick an image first: drop it on the page or choose a file.");
    $("file-input").focus();
    return;
  }
  if (!form.current) {
    stage.showMessage("No model is ready yet; the list fills in as soon as one is.");
    return;
  }
  // Several images go whole: the API takes a mask with one image only.
  const local = inputs.length === 1 ? await localEdit(input) : {};
  if (!local) return;
  const values = form.values();
  const request = {
    prompt: $("prompt").value,
    negativePrompt: values.negativePrompt,
    model: values.model,
    options: editOptions(values),
    ...local,
  };
  const variations = variationsWanted();
  if (inputs.length > 1) start(new BatchRun(api, inputs, request));
  else if (variations) start(new BatchRun(api, [input], request, variations));
  else start(new EditJob(api, input, request));
}

// The mask is encoded before the job starts: a second Enter meanwhile sends nothing more.
let preparing = false;
$("edit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if ($("process").disabled || preparing) return;
  preparing = true;
  try {
    await process();
  } finally {
    preparing = false;
  }
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    $("edit-form").requestSubmit();
  }
});
$("cancel").addEventListener("click", () => stage.job?.cancel());
$("retry").addEventListener("click", () => {
  if (stage.job) start(stage.job.again());
});
$("variations").addEventListener("input", () => updateProcess());
$("model").addEventListener("change", () => updateProcess());
// The zip comes with the key header, so it is fetched, then saved from a blob.
$("batch-zip").addEventListener("click", async () => {
  const batch = stage.job;
  if (batch?.kind !== "batch" || batch.zipping) return;
  try {
    const { blob, name } = await batch.zip();
    saveBlob(blob, name);
  } catch (error) {
    stage.showMessage(`Could not download the zip: ${error.message}`);
  }
});

// Auth: the key field appears only when the gateway asks for keys.
function showKeyForm(message) {
  const keyForm = $("key-form");
  keyForm.hidden = false;
  $("key-forget").hidden = !api.key;
  $("api-key").value = api.key;
  if (message) {
    stage.showMessage(message);
    $("api-key").focus();
  }
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  api.key = $("api-key").value.trim();
  await loadModels();
});
$("key-forget").addEventListener("click", () => {
  api.key = "";
  $("api-key").value = "";
  showKeyForm();
  $("api-key").focus();
});

async function loadModels() {
  try {
    form.load(await api.models());
    if (healthState.auth) showKeyForm();
    if (!stage.job) stage.showInput(picker.selected);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      showKeyForm(api.key ? `That key was refused: ${error.message}` : error.message);
    } else {
      stage.showMessage(`Could not load the models: ${error.message}`);
    }
  }
}

function describeHealth(health) {
  const ready = Object.entries(health.models).filter(([, up]) => up).map(([name]) => name);
  const models = ready.length ? ready.join(", ") : "no model ready yet";
  return `${health.status} · ${models}${health.auth ? " · key required" : ""}`;
}

async function pollHealth() {
  try {
    const health = await api.health();
    $("health").textContent = describeHealth(health);
    $("health").dataset.status = health.status;
    const changed = JSON.stringify(health.models) !== JSON.stringify(healthState.models);
    const first = !healthState.status;
    healthState = health;
    if (first && health.auth) showKeyForm();
    if (changed || first) await loadModels();
  } catch (error) {
    $("health").textContent = error.message;
    $("health").dataset.status = "UNREACHABLE";
  }
}

pollHealth();
setInterval(pollHealth, HEALTH_POLL_MS);
