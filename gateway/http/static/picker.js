// The picked images: chosen with the file input or dropped, previewed, one of them selected.
// Every file goes to the API as it is: the gateway decides what is an image, and says why not.

import { el, formatBytes } from "./dom.js";

let counter = 0;

function describe(item) {
  const size = formatBytes(item.file.size);
  if (item.previewable === false) return `${size} · no preview`;
  return item.width ? `${item.width}×${item.height} · ${size}` : size;
}

export class Picker {
  constructor({ input, dropzone, list, onChange }) {
    this.input = input;
    this.dropzone = dropzone;
    this.list = list;
    this.onChange = onChange;
    this.items = [];
    this.selected = null;
    this.inUse = () => false;
    this.onItems = () => {};

    input.addEventListener("change", () => {
      this.add(input.files);
      input.value = ""; // picking the same file again still fires change
    });
    for (const type of ["dragenter", "dragover"]) {
      dropzone.addEventListener(type, (event) => {
        event.preventDefault();
        dropzone.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "dragend"]) {
      dropzone.addEventListener(type, () => dropzone.classList.remove("dragging"));
    }
    dropzone.addEventListener("drop", (event) => {
      event.preventDefault();
      dropzone.classList.remove("dragging");
      this.add(event.dataTransfer.files);
    });
    // A file dropped beside the zone must not make the browser leave the page to open it.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => event.preventDefault());
    }
  }

  add(files) {
    const added = [...files].map((file) => ({
      key: `image-${++counter}`,
      file,
      name: file.name || "image",
      url: URL.createObjectURL(file),
      width: 0,
      height: 0,
      previewable: null,
    }));
    if (!added.length) return;
    this.items.push(...added);
    for (const item of added) this.measure(item);
    this.select(added[added.length - 1]);
  }

  measure(item) {
    const probe = new Image();
    probe.addEventListener("load", () => {
      item.width = probe.naturalWidth;
      item.height = probe.naturalHeight;
      item.previewable = true;
      this.render();
      if (item === this.selected) this.onChange(item);
    });
    probe.addEventListener("error", () => {
      item.previewable = false;
      this.render();
      if (item === this.selected) this.onChange(item);
    });
    probe.src = item.url;
  }

  select(item) {
    this.selected = item;
    this.render();
    this.onChange(item);
  }

  remove(item) {
    const index = this.items.indexOf(item);
    this.items.splice(index, 1);
    // An edit in the history still shows this image; its URL is released with the page.
    if (!this.inUse(item)) URL.revokeObjectURL(item.url);
    if (this.selected === item) {
      this.select(this.items[Math.min(index, this.items.length - 1)] ?? null);
    } else {
      this.render();
    }
    // The focused button is gone: keyboard users go on from the selected image, or the input.
    const next = this.selected && this.list.querySelector(`[data-key="${this.selected.key}"]`);
    (next || this.input).focus();
  }

  render() {
    const focused = document.activeElement?.dataset.key;
    this.list.replaceChildren(...this.items.map((item) => this.row(item)));
    if (focused) this.list.querySelector(`[data-key="${focused}"]`)?.focus();
    this.onItems(this.items);
  }

  row(item) {
    const selected = item === this.selected;
    const thumb = el(
      "button",
      {
        type: "button",
        class: "thumb",
        "aria-pressed": selected ? "true" : "false",
        "data-key": item.key,
        title: item.name,
      },
      item.previewable === false
        ? el("span", { class: "thumb-placeholder", "aria-hidden": "true" }, "?")
        : el("img", { src: item.url, alt: "" }),
      el("span", { class: "thumb-name" }, item.name),
      el("span", { class: "note" }, describe(item)),
    );
    thumb.addEventListener("click", () => this.select(item));
    const remove = el(
      "button",
      { type: "button", class: "remove", "aria-label": `Remove ${item.name}`, "data-key": `${item.key}-x` },
      "×",
    );
    remove.addEventListener("click", () => this.remove(item));
    return el("li", {}, thumb, remove);
  }
}
