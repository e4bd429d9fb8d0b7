// A run's timeline of arrivals: one tick per event at its arrival (ms since Start), so the
// first-event delay shows as the empty lead-in and a slow token or a buffering proxy (a long gap,
// then a burst) shows at a glance, not in a column of numbers. Beside it the figures: time to
// first event, events, the gaps' p50 / p99 / max and the tokens read at the route's usage pointers.
//
// The gaps are exact: differences of arrival times in the page, ranked as the gateway ranks its
// buckets (nearest rank), so they can differ from its bucketed gap_p50_ms / gap_p99_ms. A gap
// longer than SLOW_FACTOR times the median (and SLOW_FLOOR_MS, as a burst's median is about 0)
// turns its tick and the gap itself red. Plain SVG, no library: ticks are drawn once in ms and
// a scale transform fits them to the width; a redraw waits for an animation frame.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const SLOW_FACTOR = 5;
const SLOW_FLOOR_MS = 10;
const PAD = 8; // px either side of the axis
const TICK_TOP = 4;
const AXIS_Y = 30;
const LABEL_Y = 44;

class Timeline {
  constructor(route, started) {
    this.started = started;
    this.endedAt = null;
    this.arrivals = [];
    this.gaps = [];
    this.frame = 0;
    this.pointers = route.usage && {
      prompt: pointerTokens(route.usage.prompt_tokens),
      completion: pointerTokens(route.usage.completion_tokens),
    };
    this.tokens = { prompt: null, completion: null };
    this.tokensNote = route.usage ? "" : "the route has no usage pointers";
    const svg = document.getElementById("timeline-strip");
    this.svg = svg;
    this.lead = svgElement("rect", { class: "lead", y: TICK_TOP, height: AXIS_Y - TICK_TOP, width: 0 });
    this.slowGaps = svgElement("g", { class: "slow-gaps" });
    this.ticks = svgElement("g", { class: "ticks" });
    this.plot = svgElement("g", {}, [this.lead, this.slowGaps, this.ticks]);
    this.axis = svgElement("g", { class: "axis" });
    svg.replaceChildren(this.plot, this.axis);
    this.schedule();
  }

  arrive(ms) {
    const last = this.arrivals.at(-1);
    this.arrivals.push(ms);
    if (last !== undefined) this.gaps.push(ms - last);
    this.schedule();
  }

  end(ms) {
    this.endedAt = ms;
    this.schedule();
  }

  // One upstream unit as the tap shows it (a JSON line, or an upstream SSE event's fields), or
  // an event's data when it is the whole line: the counts at the usage pointers, if it has them.
  // They are totals (Ollama's done line, OpenAI's last chunk), so the last one seen wins.
  readUsage(text) {
    if (!this.pointers) return;
    const document = parseUnit(text);
    if (document === undefined) return;
    for (const kind of ["prompt", "completion"]) {
      const tokens = this.pointers[kind];
      const value = tokens && resolvePointer(tokens, document);
      if (Number.isInteger(value) && value >= 0) this.tokens[kind] = value;
    }
    this.schedule();
  }

  // Without the upstream lines (a stream's URL, whose data is not the whole line) the page cannot
  // know the tokens.
  noLines() {
    if (this.pointers) this.tokensNote = "a stream keeps the route's events, not the upstream lines";
    this.pointers = null;
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  draw() {
    this.frame = 0;
    if (this.plot.parentNode !== this.svg) return; // a later run's timeline has the strip
    const now = this.endedAt ?? performance.now() - this.started;
    const span = Math.max(now, this.arrivals.at(-1) ?? 0, 1);
    const width = this.svg.clientWidth || 600;
    const scale = (width - 2 * PAD) / span;
    this.plot.setAttribute("transform", `translate(${PAD} 0) scale(${scale} 1)`);
    this.lead.setAttribute("width", String(this.arrivals.length ? this.arrivals[0] : now));
    for (let i = this.ticks.childElementCount; i < this.arrivals.length; i++) this.addTick(i);

    const sorted = this.gaps.slice().sort((a, b) => a - b);
    const p50 = rank(sorted, 0.5);
    const threshold = Math.max(SLOW_FACTOR * (p50 ?? 0), SLOW_FLOOR_MS);
    const slow = [];
    [...this.ticks.children].forEach((tick, i) => {
      const isSlow = i > 0 && this.gaps[i - 1] > threshold;
      tick.classList.toggle("slow", isSlow);
      if (isSlow) slow.push(i);
    });
    this.slowGaps.replaceChildren(...slow.map((i) => svgElement("rect", {
      x: this.arrivals[i - 1], width: this.gaps[i - 1], y: AXIS_Y - 3, height: 3,
    })));
    this.drawAxis(span, scale, width);

    const first = this.arrivals[0];
    setText("timeline-first", first === undefined ? "–" : formatMs(first));
    setText("timeline-events", String(this.arrivals.length));
    setText("timeline-gap-p50", formatMs(p50));
    setText("timeline-gap-p99", formatMs(rank(sorted, 0.99)));
    setText("timeline-gap-max", formatMs(sorted.at(-1)));
    const { prompt, completion } = this.tokens;
    const tokens = document.getElementById("timeline-tokens");
    tokens.textContent = prompt === null && completion === null
      ? "–"
      : `${prompt ?? "–"} prompt · ${completion ?? "–"} completion`;
    tokens.title = this.tokensNote;
  }

  addTick(i) {
    const ms = this.arrivals[i];
    const tick = svgElement("line", {
      class: "tick", x1: ms, x2: ms, y1: TICK_TOP, y2: AXIS_Y, "data-ms": ms.toFixed(1),
      "vector-effect": "non-scaling-stroke",
    });
    const title = svgElement("title");
    title.textContent = `#${i + 1} at ${formatMs(ms)}` + (i ? `, ${formatMs(this.gaps[i - 1])} after the last` : "");
    tick.append(title);
    if (i) tick.dataset.gapMs = this.gaps[i - 1].toFixed(1);
    this.ticks.append(tick);
  }

  drawAxis(span, scale, width) {
    const step = niceStep(span / 5);
    const marks = [svgElement("line", { x1: PAD, x2: width - PAD, y1: AXIS_Y, y2: AXIS_Y })];
    for (let v = 0; v <= span; v += step) {
      const x = PAD + v * scale;
      marks.push(svgElement("line", { x1: x, x2: x, y1: AXIS_Y, y2: AXIS_Y + 3 }));
      const anchor = v === 0 ? "start" : x > width - 3 * PAD ? "end" : "middle";
      const label = svgElement("text", { x, y: LABEL_Y, "text-anchor": anchor });
      label.textContent = step >= 1000 ? `${v / 1000} s` : `${v} ms`;
      marks.push(label);
    }
    this.axis.replaceChildren(...marks);
  }
}

// The nearest-rank percentile of sorted values; null for none.
function rank(sorted, fraction) {
  if (!sorted.length) return null;
  return sorted[Math.max(1, Math.ceil(fraction * sorted.length)) - 1];
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  return [1, 2, 5, 10].find((m) => m * power >= raw) * power;
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  return `${ms < 10 ? ms.toFixed(1) : ms.toFixed(0)} ms`;
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function svgElement(name, attributes = {}, children = []) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  element.append(...children);
  return element;
}

// A JSON line, or the tap's text of an upstream SSE event (its data lines hold the JSON).
function parseUnit(text) {
  try {
    return JSON.parse(text);
  } catch (_) { /* not a JSON line: perhaps an SSE event's fields */ }
  const data = text.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
  if (!data.length) return undefined;
  try {
    return JSON.parse(data.join("\n"));
  } catch (_) {
    return undefined;
  }
}

// RFC 6901: "/a/b~1c" names a → "b/c"; null for no pointer.
function pointerTokens(text) {
  if (text === null || text === undefined) return null;
  return text.split("/").slice(1).map((t) => t.replaceAll("~1", "/").replaceAll("~0", "~"));
}

function resolvePointer(tokens, value) {
  for (const token of tokens) {
    if (Array.isArray(value)) {
      if (!/^(0|[1-9]\d*)$/.test(token) || Number(token) >= value.length) return undefined;
      value = value[Number(token)];
    } else if (value !== null && typeof value === "object" && Object.hasOwn(value, token)) {
      value = value[token];
    } else {
      return undefined;
    }
  }
  return value;
}
