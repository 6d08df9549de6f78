// The mask tool over the input preview: a brush, an eraser and a rectangle paint a translucent
// overlay, Clear and Invert act on all of it, and four fields give a region by keyboard. What the
// overlay shows is what is sent: the region while its fields are filled, else the painting.
// Each picked image keeps its own mask, at its own upright size. The tool stays under a result,
// and using it asks for the input's preview again (onUse).

import { show } from "./dom.js";
import { Mask, spanned } from "./mask.js";

const OVERLAY = "rgba(255, 0, 110, 0.45)";
const OUTLINE = "rgba(255, 0, 110, 0.9)";
const NO_REGION = ["", "", "", ""];

/** How many of a state's four region fields are filled. */
function filledFields(state) {
  return state ? state.region.filter((value) => value !== "").length : 0;
}

/** A state's region, {x, y, width, height}, once its four fields are filled; else null. */
function regionOf(state) {
  if (filledFields(state) !== 4) return null;
  const [x, y, width, height] = state.region.map(Number);
  return { x, y, width, height };
}

export class MaskTool {
  constructor(elements) {
    this.e = elements;
    this.states = new WeakMap();
    this.input = null;
    this.state = null;
    this.tool = null;
    this.drag = null;
    this.frame = 0;
    this.onChange = () => {};
    this.onUse = () => {};
    this.overlay = elements.canvas.getContext("2d");
    const { brush, eraser, rectangle } = elements;
    this.buttons = { brush, eraser, rectangle };
    for (const [tool, button] of Object.entries(this.buttons)) {
      button.addEventListener("click", () => this.choose(this.tool === tool ? null : tool));
    }
    elements.clear.addEventListener("click", () => this.clear());
    elements.invert.addEventListener("click", () => this.invert());
    elements.size.addEventListener("input", () => this.showSize());
    for (const field of elements.region) field.addEventListener("input", () => this.readRegion());
    const canvas = elements.canvas;
    canvas.addEventListener("pointerdown", (event) => this.press(event));
    canvas.addEventListener("pointermove", (event) => this.move(event));
    canvas.addEventListener("pointerup", (event) => this.release(event, true));
    canvas.addEventListener("pointercancel", (event) => this.release(event, false));
    new ResizeObserver(() => this.redraw()).observe(canvas);
    this.showSize();
  }

  /**
   * Shows the tool for `input` (null, or an image of unknown size, hides it), and its overlay
   * when `previewing`: the input alone is on the stage.
   */
  show(input, previewing) {
    const usable = input?.width && input?.height ? input : null;
    show(this.e.panel, Boolean(usable));
    show(this.e.canvas, Boolean(usable && previewing));
    if (usable === this.input) return;
    this.input = usable;
    this.drag = null;
    this.state = usable ? this.stateOf(usable) : null;
    const limits = [usable?.width, usable?.height, usable?.width, usable?.height];
    this.e.region.forEach((field, index) => {
      field.value = this.state?.region[index] ?? "";
      field.max = String(limits[index] ?? "");
    });
    this.draw();
    this.describe();
  }

  stateOf(input) {
    let state = this.states.get(input);
    if (!state) {
      state = { mask: new Mask(input.width, input.height), region: NO_REGION };
      this.states.set(input, state);
    }
    return state;
  }

  /** What is marked on `input`: "region", "mask", or "" when the whole image is edited. */
  marks(input) {
    const state = this.states.get(input);
    if (regionOf(state)) return "region";
    return state && !state.mask.empty ? "mask" : "";
  }

  /** Why `input`'s marks cannot be sent as they are; "" when they can. */
  problem(input) {
    const filled = filledFields(this.states.get(input));
    return filled && filled < 4
      ? "Fill in all four region fields (x, y, width, height), or empty them."
      : "";
  }

  /** The form fields of `input`'s local edit: {region} or {mask}, or none for a whole edit. */
  async fields(input) {
    const state = this.states.get(input);
    const region = regionOf(state);
    if (region) return { region: [region.x, region.y, region.width, region.height].join(",") };
    if (state && !state.mask.empty) return { mask: await state.mask.png() };
    return {};
  }

  focusRegion() {
    this.e.region.find((field) => field.value === "")?.focus();
  }

  choose(tool) {
    if (tool) this.onUse();
    this.tool = tool;
    for (const [name, button] of Object.entries(this.buttons)) {
      button.setAttribute("aria-pressed", String(name === tool));
    }
    this.e.canvas.classList.toggle("painting", Boolean(tool));
    this.describe();
  }

  showSize() {
    this.e.sizeValue.textContent = `${this.e.size.value} px`;
  }

  readRegion() {
    if (!this.state) return;
    this.onUse();
    this.state.region = this.e.region.map((field) => field.value.trim());
    this.draw();
    this.changed();
  }

  /** Painting once a region is typed: the region becomes the painting, the fields empty. */
  paintOverRegion() {
    const region = regionOf(this.state);
    if (!filledFields(this.state)) return;
    this.state.mask.clear();
    if (region) this.state.mask.rectangle(region);
    this.state.region = NO_REGION;
    for (const field of this.e.region) field.value = "";
  }

  clear() {
    if (!this.state) return;
    this.onUse();
    this.paintOverRegion();
    this.state.mask.clear();
    this.draw();
    this.changed();
  }

  invert() {
    if (!this.state) return;
    this.onUse();
    this.paintOverRegion();
    this.state.mask.invert();
    this.draw();
    this.changed();
  }

  // The pointer paints: a mouse, a finger or a pen, captured until it lifts.
  press(event) {
    if (!this.tool || !this.state || event.button !== 0) return;
    event.preventDefault();
    this.e.canvas.setPointerCapture(event.pointerId);
    this.paintOverRegion();
    const point = this.pointOf(event);
    this.drag = { id: event.pointerId, from: point, to: point };
    this.paintTo(point);
    this.redraw();
  }

  move(event) {
    if (this.drag?.id !== event.pointerId) return;
    this.paintTo(this.pointOf(event));
    this.redraw();
  }

  release(event, commit) {
    if (this.drag?.id !== event.pointerId) return;
    this.paintTo(this.pointOf(event));
    const { from, to } = this.drag;
    this.drag = null;
    const { mask } = this.state;
    if (this.tool === "rectangle" && commit) {
      mask.rectangle(spanned(from, to, mask.width, mask.height));
    }
    this.draw();
    this.changed();
  }

  /** A stroke of the brush or eraser from the last point; a rectangle only follows. */
  paintTo(point) {
    const { drag } = this;
    if (this.tool !== "rectangle") {
      const width = Number(this.e.size.value) / this.fitted().scale;
      this.state.mask.stroke(drag.to, point, width, this.tool === "eraser");
    }
    drag.to = point;
  }

  /** Where the image lies in the canvas's box, as object-fit: contain puts it (CSS pixels). */
  fitted() {
    const { width, height } = this.state.mask;
    const box = this.e.canvas.getBoundingClientRect();
    const scale = Math.min(box.width / width, box.height / height) || 1;
    return { box, scale, x: (box.width - width * scale) / 2, y: (box.height - height * scale) / 2 };
  }

  /** A pointer's place in the image's pixels. */
  pointOf(event) {
    const { box, scale, x, y } = this.fitted();
    return { x: (event.clientX - box.left - x) / scale, y: (event.clientY - box.top - y) / scale };
  }

  /** Draws on the next frame: a stroke moves many times a frame. */
  redraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  draw() {
    const { canvas } = this.e;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(canvas.clientWidth * ratio);
    const height = Math.round(canvas.clientHeight * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    this.overlay.clearRect(0, 0, width, height);
    if (!this.state || !width || !height) return;
    // The overlay's own pixels for a rectangle of the image: [x, y, width, height].
    const fit = this.fitted();
    const scale = fit.scale * ratio;
    const place = (r) => [
      fit.x * ratio + r.x * scale,
      fit.y * ratio + r.y * scale,
      r.width * scale,
      r.height * scale,
    ];
    const region = regionOf(this.state);
    if (region) this.drawRegion(place(region), ratio);
    else this.drawPainting(place, width, height);
  }

  drawRegion(placed, ratio) {
    const c = this.overlay;
    c.fillStyle = OVERLAY;
    c.fillRect(...placed);
    c.strokeStyle = OUTLINE;
    c.lineWidth = 2 * ratio;
    c.strokeRect(...placed);
  }

  drawPainting(place, width, height) {
    const c = this.overlay;
    const { mask } = this.state;
    c.drawImage(mask.canvas, ...place({ x: 0, y: 0, width: mask.width, height: mask.height }));
    if (this.drag && this.tool === "rectangle") {
      c.fillStyle = "#ffffff";
      c.fillRect(...place(spanned(this.drag.from, this.drag.to, mask.width, mask.height)));
    }
    // Whatever is painted takes the overlay's colour, at its own strength.
    c.globalCompositeOperation = "source-in";
    c.fillStyle = OVERLAY;
    c.fillRect(0, 0, width, height);
    c.globalCompositeOperation = "source-over";
  }

  changed() {
    this.describe();
    this.onChange();
  }

  describe() {
    const { state, tool } = this;
    const filled = filledFields(state);
    let text;
    if (filled === 4) {
      text = "The region is edited and the rest keeps its pixels. Painting turns it into paint.";
    } else if (filled) {
      text = "Fill in all four region fields, or empty them.";
    } else if (state && !state.mask.empty) {
      text = "The painted part is edited and the rest keeps its pixels.";
    } else if (tool) {
      text = `Nothing marked yet: drag over the picture with the ${tool}.`;
    } else {
      text = "Nothing marked: the whole image is edited. Choose a tool and paint over the "
        + "picture, or type a region.";
    }
    this.e.note.textContent = text;
  }
}
