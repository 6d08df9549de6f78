// A local edit's mask, at the image's own upright pixel size: opaque where the edit goes,
// transparent where the image keeps its pixels. It is sent as an opaque PNG, white where the
// edit goes and black elsewhere (grey at soft edges, which the gateway blends).

const PAINT = "#ffffff";

/** {x, y, width, height} of the rectangle two points span, within width x height. */
export function spanned(from, to, width, height) {
  const left = Math.max(0, Math.round(Math.min(from.x, to.x)));
  const top = Math.max(0, Math.round(Math.min(from.y, to.y)));
  const right = Math.min(width, Math.round(Math.max(from.x, to.x)));
  const bottom = Math.min(height, Math.round(Math.max(from.y, to.y)));
  return { x: left, y: top, width: Math.max(0, right - left), height: Math.max(0, bottom - top) };
}

export class Mask {
  constructor(width, height) {
    this.width = width;
    this.height = height;
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    // Read back to tell whether anything is marked: kept in memory rather than on a GPU.
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
    this.emptyKnown = true;
  }

  /** A brush (or, with `erase`, an eraser) stroke from one point to another, `size` wide. */
  stroke(from, to, size, erase = false) {
    const c = this.context;
    c.save();
    c.globalCompositeOperation = erase ? "destination-out" : "source-over";
    c.strokeStyle = c.fillStyle = PAINT;
    c.lineWidth = size;
    c.lineCap = c.lineJoin = "round";
    c.beginPath();
    if (from.x === to.x && from.y === to.y) {
      c.arc(from.x, from.y, size / 2, 0, 2 * Math.PI);
      c.fill();
    } else {
      c.moveTo(from.x, from.y);
      c.lineTo(to.x, to.y);
      c.stroke();
    }
    c.restore();
    this.changed();
  }

  rectangle({ x, y, width, height }) {
    this.context.fillStyle = PAINT;
    this.context.fillRect(x, y, width, height);
    this.changed();
  }

  clear() {
    this.context.clearRect(0, 0, this.width, this.height);
    this.emptyKnown = true;
  }

  /** What was marked is kept, and what was kept is marked: xor with an opaque fill. */
  invert() {
    const c = this.context;
    c.save();
    c.globalCompositeOperation = "xor";
    c.fillStyle = PAINT;
    c.fillRect(0, 0, this.width, this.height);
    c.restore();
    this.changed();
  }

  changed() {
    this.emptyKnown = null;
  }

  /** Whether nothing is marked; read from the pixels once per change (an eraser can empty it). */
  get empty() {
    if (this.emptyKnown === null) {
      const { data } = this.context.getImageData(0, 0, this.width, this.height);
      let marked = false;
      for (let i = 3; i < data.length; i += 4) {
        if (data[i]) {
          marked = true;
          break;
        }
      }
      this.emptyKnown = !marked;
    }
    return this.emptyKnown;
  }

  /** The mask as the API takes it: an opaque PNG of the image's size, white where it edits. */
  png() {
    const out = document.createElement("canvas");
    out.width = this.width;
    out.height = this.height;
    const c = out.getContext("2d");
    c.fillStyle = "#000000";
    c.fillRect(0, 0, this.width, this.height);
    c.drawImage(this.canvas, 0, 0);
    return new Promise((resolve, reject) => {
      out.toBlob((blob) => {
        if (blob) resolve(blob);
        else reject(new Error("could not encode the mask"));
      }, "image/png");
    });
  }
}
