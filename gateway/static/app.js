// The playground: pick images, describe the edit, watch it run, compare, download.

import { Api, ApiError } from "./api.js";
import { History } from "./history.js";
import { EditJob, editOptions } from "./job.js";
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

let healthState = { auth: false, models: {} };

function showJob(job) {
  history.select(job);
  stage.showJob(job);
  updateProcess();
}

function updateProcess() {
  $("process").disabled = Boolean(stage.job?.active);
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

function process() {
  const input = picker.selected;
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
  const values = form.values();
  start(
    new EditJob(api, input, {
      prompt: $("prompt").value,
      negativePrompt: values.negativePrompt,
      model: values.model,
      options: editOptions(values),
    }),
  );
}

$("edit-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!$("process").disabled) process();
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
