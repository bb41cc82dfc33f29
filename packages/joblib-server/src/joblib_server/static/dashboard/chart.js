// Tasks per second and queue depth per job over the last minutes, on a canvas.
// One sample a second: completions counted from task_status_event, and each
// job's pending count as the page knows it.

const WINDOW_SECONDS = 300;
const COLORS = ["#2563eb", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2"];
const RATE_COLOR = "#111827";

export class Chart {
  constructor(canvas, legend) {
    this.canvas = canvas;
    this.legend = legend;
    this.reset();
  }

  reset() {
    this.samples = []; // {rate, depth: Map(job -> n)}
    this.completed = 0;
    this.colors = new Map();
  }

  /** A task reached `completed` (counted into the current second). */
  completion() {
    this.completed += 1;
  }

  /** Close the current second with the queue depths `depth` (Map job -> n). */
  sample(depth) {
    this.samples.push({ rate: this.completed, depth: new Map(depth) });
    this.completed = 0;
    if (this.samples.length > WINDOW_SECONDS) this.samples.shift();
    for (const job of depth.keys()) {
      if (!this.colors.has(job)) {
        this.colors.set(job, COLORS[this.colors.size % COLORS.length]);
      }
    }
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const ctx = canvas.getContext("2d");
    const width = canvas.width;
    const height = canvas.height;
    const left = 32;
    const bottom = height - 16;
    const top = 8;
    ctx.clearRect(0, 0, width, height);
    let max = 1;
    for (const s of this.samples) {
      max = Math.max(max, s.rate, ...s.depth.values());
    }
    max = niceCeiling(max);
    const x = (i) => left + ((width - left - 4) * i) / (WINDOW_SECONDS - 1);
    const y = (v) => bottom - ((bottom - top) * v) / max;

    ctx.strokeStyle = "#e5e7eb";
    ctx.fillStyle = "#6b7280";
    ctx.font = "10px sans-serif";
    ctx.lineWidth = 1;
    for (const v of [0, max / 2, max]) {
      ctx.beginPath();
      ctx.moveTo(left, y(v));
      ctx.lineTo(width - 4, y(v));
      ctx.stroke();
      ctx.fillText(String(Math.round(v * 10) / 10), 2, y(v) + 3);
    }
    ctx.fillText("-5 min", left, height - 2);
    ctx.fillText("now", width - 26, height - 2);

    // Newest sample at the right edge.
    const offset = WINDOW_SECONDS - this.samples.length;
    const line = (value, color, widthPx) => {
      ctx.strokeStyle = color;
      ctx.lineWidth = widthPx;
      ctx.beginPath();
      this.samples.forEach((s, i) => {
        const v = value(s);
        if (i === 0) ctx.moveTo(x(offset + i), y(v));
        else ctx.lineTo(x(offset + i), y(v));
      });
      ctx.stroke();
    };
    for (const [job, color] of this.colors) {
      line((s) => s.depth.get(job) || 0, color, 1.5);
    }
    line((s) => s.rate, RATE_COLOR, 2);
    this.drawLegend();
  }

  drawLegend() {
    const items = [["completed / s", RATE_COLOR]];
    for (const [job, color] of this.colors) items.push([`pending: ${job}`, color]);
    if (this.legend.childElementCount === items.length) return;
    this.legend.replaceChildren(
      ...items.map(([label, color]) => {
        const li = document.createElement("li");
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = color;
        li.append(swatch, document.createTextNode(label));
        return li;
      }),
    );
  }
}

function niceCeiling(value) {
  for (const step of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]) {
    if (value <= step) return step;
  }
  return 10 ** Math.ceil(Math.log10(value));
}
