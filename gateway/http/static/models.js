// The model, preset and format choices, built from GET /models, and which options apply.

import { el, show } from "./dom.js";

const FORMAT_NAMES = { "image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp" };
const FORMAT_LABELS = { jpeg: "JPEG", png: "PNG", webp: "WebP" };
const DEFAULT_MAX_BATCH = 16;

export class ModelForm {
  constructor(elements) {
    this.e = elements;
    this.models = [];
    elements.model.addEventListener("change", () => this.update());
    elements.preset.addEventListener("change", () => this.updateStepsHint());
  }

  get current() {
    return this.models.find((m) => m.name === this.e.model.value) ?? null;
  }

  /** Fills the choices; keeps the user's model when it is still offered. */
  load(catalogue) {
    const previous = this.e.model.value;
    this.models = catalogue.models;
    this.e.model.replaceChildren(
      ...this.models.map((m) =>
        el(
          "option",
          { value: m.name, disabled: !m.ready },
          m.ready ? m.name : `${m.name} (not ready)`,
        ),
      ),
    );
    const ready = this.models.filter((m) => m.ready).map((m) => m.name);
    const pick = [previous, catalogue.default_model, ...ready].find((n) => ready.includes(n));
    if (pick) this.e.model.value = pick;
    // Every model takes the same formats; the output may be any of them.
    const formats = (this.models[0]?.formats ?? ["image/png"]).map((f) => FORMAT_NAMES[f] ?? f);
    this.e.fileInput.accept = (this.models[0]?.formats ?? []).join(",");
    const format = this.e.format.value || (formats.includes("png") ? "png" : formats[0]);
    this.e.format.replaceChildren(...formats.map((f) => el("option", { value: f }, f)));
    this.e.format.value = format;
    this.update();
  }

  update() {
    const model = this.current;
    const presets = model?.presets ?? null;
    const generative = Boolean(presets);
    const preset = this.e.preset.value;
    this.e.preset.replaceChildren(
      ...(generative
        ? Object.entries(presets).map(([name, spec]) =>
            el("option", { value: name }, `${name} (${spec.steps} steps)`),
          )
        : [el("option", { value: "" }, "not used")]),
    );
    if (generative) {
      this.e.preset.value = preset in presets ? preset : (model.defaults?.preset ?? "");
    }
    for (const input of [this.e.preset, this.e.steps, this.e.cfg, this.e.seed, this.e.negative]) {
      input.disabled = !generative;
    }
    this.e.advancedNote.textContent = model && !generative
      ? `${model.name} is deterministic: it takes no preset, steps, seed or negative prompt.`
      : "";
    show(this.e.advancedNote, Boolean(model && !generative));
    // Variations are seeds: only a model that samples from one takes them.
    show(this.e.variationsField, generative);
    this.e.variations.max = String(model?.limits?.max_batch_images ?? DEFAULT_MAX_BATCH);
    this.e.warning.textContent = model?.random_weights
      ? `${model.name} has random weights (the dev model): it runs the real pipeline, but its `
        + "pixels are noise. For a meaningful edit on this machine, pick classic_edit."
      : "";
    show(this.e.warning, Boolean(model?.random_weights));
    const vocabulary = model?.vocabulary ?? [];
    this.e.vocabularyModel.textContent = model?.name ?? "";
    this.e.vocabularyList.replaceChildren(...vocabulary.map((line) => el("li", {}, line)));
    show(this.e.vocabulary, vocabulary.length > 0);
    this.e.fileNote.textContent = model ? limitsNote(model) : "JPEG, PNG or WebP";
    this.updateStepsHint();
  }

  updateStepsHint() {
    const model = this.current;
    const spec = model?.presets?.[this.e.preset.value];
    this.e.steps.placeholder = spec ? String(spec.steps) : "";
    this.e.cfg.placeholder = spec ? String(spec.true_cfg_scale) : "";
  }

  /** The request fields for the current model: the options that don't apply are left out. */
  values() {
    const generative = Boolean(this.current?.presets);
    return {
      model: this.e.model.value,
      preset: generative ? this.e.preset.value : "",
      steps: generative ? this.e.steps.value.trim() : "",
      trueCfgScale: generative ? this.e.cfg.value.trim() : "",
      seed: generative ? this.e.seed.value.trim() : "",
      negativePrompt: generative ? this.e.negative.value.trim() : "",
      variations: generative ? this.e.variations.value.trim() : "",
      outputFormat: this.e.format.value,
    };
  }
}

function limitsNote(model) {
  const names = model.formats.map((f) => FORMAT_NAMES[f] ?? f);
  const labels = names.map((name) => FORMAT_LABELS[name] ?? name.toUpperCase());
  const formats = labels.length > 1
    ? `${labels.slice(0, -1).join(", ")} or ${labels[labels.length - 1]}`
    : labels.join("");
  const limits = model.limits ?? {};
  const parts = [formats];
  if (limits.max_image_bytes) parts.push(`up to ${Math.round(limits.max_image_bytes / 2 ** 20)} MB`);
  if (limits.max_pixels) parts.push(`${(limits.max_pixels / 1e6).toFixed(1)} megapixels`);
  return parts.join(" · ");
}
