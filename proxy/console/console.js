// The stream console. Plain script, no build step: it lists the gateway's routes, builds the
// request for one, opens it (EventSource for GET so DevTools shows it, fetch for POST) with the
// tap parameter, and fills a table as events arrive. An "upstream-line" tap event comes just
// before the events its line became and names them, so a native EventSource can listen for
// names it could not know in advance (event_from). A POST on a route with streams creates a
// stream instead (POST {path}/streams) and reads its URL with EventSource: the stream keeps the
// route's events, not the upstream lines, so such a run has no tap. Each run draws its timeline of
// arrivals (timeline.js).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, route: null, stream: null };

async function loadRoutes() {
  const response = await fetch("/_console/routes");
  state.info = await response.json();
  const list = $("routes");
  state.info.routes.forEach((route, index) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.index = String(index);
    button.textContent = route.path;
    const small = document.createElement("small");
    small.textContent = `${route.methods.join(", ")} → ${route.upstream_method} ${route.upstream}`;
    button.append(small);
    button.addEventListener("click", () => selectRoute(index));
    item.append(button);
    list.append(item);
  });
  const wanted = new URLSearchParams(location.search).get("route");
  const found = state.info.routes.findIndex((r) => r.path === wanted);
  if (state.info.routes.length) selectRoute(found >= 0 ? found : 0);
}

function selectRoute(index) {
  stopStream("stopped: another route was chosen");
  const route = state.info.routes[index];
  state.route = route;
  document.querySelectorAll("#routes button").forEach((b) => {
    b.classList.toggle("selected", b.dataset.index === String(index));
  });
  $("request").hidden = false;
  $("route-title").textContent = route.path;
  const e = route.events;
  const rules = [
    `data: ${e.data}`,
    `id: ${e.id}`,
    e.event_from ? `event_from: ${e.event_from}` : `event: ${e.event}`,
    e.complete_when ? `complete_when: ${e.complete_when}` : null,
  ].filter(Boolean);
  $("route-info").textContent =
    `→ ${route.upstream_method} ${route.upstream} · ${rules.join(" · ")}` +
    (route.injected_headers.length ? ` · injects ${route.injected_headers.join(", ")}` : "");
  const variables = $("variables");
  variables.replaceChildren();
  for (const name of route.variables) {
    const label = document.createElement("label");
    label.textContent = `{${name}}`;
    const input = document.createElement("input");
    input.type = "text";
    input.name = name;
    input.dataset.variable = name;
    label.append(input);
    variables.append(label);
  }
  const methods = $("methods");
  methods.querySelectorAll("label").forEach((l) => l.remove());
  route.methods.forEach((method, i) => {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "method";
    radio.value = method;
    radio.checked = i === 0;
    label.append(radio, ` ${method} ${methodHow(route, method)}`);
    methods.append(label);
  });
  const defaults = Object.keys(route.body_defaults).length
    ? `merged over the route's defaults ${JSON.stringify(route.body_defaults)}`
    : "";
  $("body-hint").textContent = defaults;
  $("body").value = localStorage.getItem(`console-body:${route.path}`) || "{}";
}

function methodHow(route, method) {
  if (method === "GET") return "(EventSource)";
  return route.streams ? "(creates a stream, then reads its URL; no upstream lines)" : "(fetch)";
}

function routePath(route) {
  return route.path.replace(/\{([A-Za-z_]\w*)(?::([^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}/g, (_, name, regex) => {
    const value = document.querySelector(`[data-variable="${name}"]`).value;
    // A variable whose pattern spans segments ({tail:.*}) keeps its slashes.
    const spans = regex !== undefined && new RegExp(`^(?:${regex})$`).test("a/b");
    return spans ? value.split("/").map(encodeURIComponent).join("/") : encodeURIComponent(value);
  });
}

function requestUrl(route, body, method) {
  const path = routePath(route);
  const query = new URLSearchParams();
  if (method === "GET" && Object.keys(body).length) {
    if (route.query_param) {
      query.set(route.query_param, JSON.stringify(body));
    } else {
      for (const [key, value] of Object.entries(body)) {
        query.set(key, typeof value === "string" ? value : JSON.stringify(value));
      }
    }
  }
  query.set(state.info.tap_param, "1");
  return `${path}?${query}`;
}

// -- one stream ---------------------------------------------------------------------------------

class Run {
  constructor(route) {
    this.route = route;
    this.started = performance.now();
    this.timeline = new Timeline(route, this.started);
    this.events = 0;
    this.rows = 0;
    this.pending = null; // the row of the last tap event, until its events have filled it
    this.ended = false;
    this.timer = setInterval(() => this.showStats(), 250);
    $("events").querySelector("tbody").replaceChildren();
    this.setEnd("–", "");
    $("state").textContent = "connecting";
    this.showStats();
  }

  tap(data) {
    const line = JSON.parse(data);
    this.pending = { row: this.addRow(), expected: line.events.slice() };
    const cells = this.pending.row.cells;
    cells[2].textContent = line.raw + (line.truncated ? ` … (${line.bytes} bytes)` : "");
    cells[2].title = `${line.bytes} bytes from the upstream`;
    if (!line.events.length) cells[3].textContent = "(no event: blank line)";
    if (!line.truncated) this.timeline.readUsage(line.raw);
    return line.events;
  }

  event(name, id, data) {
    const now = performance.now();
    let row;
    if (this.pending && this.pending.expected.length) {
      row = this.pending.row;
      this.pending.expected.shift();
      if (row.cells[3].textContent) row = this.addRow(); // a line that became several events
    } else {
      row = this.addRow();
      row.cells[2].textContent = "—";
    }
    row.cells[1].textContent = (now - this.started).toFixed(0);
    row.cells[3].textContent = name;
    row.cells[4].textContent = id;
    row.cells[5].textContent = data;
    row.cells[6].textContent = String(new TextEncoder().encode(data).length);
    const e = this.route.events;
    if (name === e.end_event) {
      row.className = "end";
      this.finish("end", true);
    } else if (name === e.error_event) {
      row.className = "error";
      let reason = data;
      try {
        const error = JSON.parse(data);
        reason = `error ${error.code}: ${error.message}`;
      } catch (_) { /* not JSON: show it as it came */ }
      this.finish(reason, false);
    } else {
      this.timeline.arrive(now - this.started);
      this.events += 1;
    }
    this.showStats();
  }

  addRow() {
    const row = $("events").querySelector("tbody").insertRow();
    for (let i = 0; i < 7; i++) row.insertCell();
    row.cells[0].textContent = String(++this.rows);
    row.cells[2].className = "raw";
    row.cells[3].className = "event";
    row.cells[1].textContent = (performance.now() - this.started).toFixed(0);
    return row;
  }

  finish(reason, ok) {
    if (this.ended) return;
    this.ended = true;
    this.elapsed = performance.now() - this.started;
    this.timeline.end(this.elapsed);
    clearInterval(this.timer);
    this.setEnd(reason, ok ? "ok" : "bad");
    $("state").textContent = "closed";
    $("start").disabled = false;
    $("stop").disabled = true;
    this.close();
    this.showStats();
  }

  setEnd(text, cls) {
    const end = $("end-reason");
    end.textContent = text;
    end.className = cls;
  }

  showStats() {
    const elapsed = this.ended ? this.elapsed : performance.now() - this.started;
    $("elapsed").textContent = `${(elapsed / 1000).toFixed(2)} s`;
    $("rate").textContent = elapsed > 0 && this.events ? (this.events / (elapsed / 1000)).toFixed(1) : "–";
    this.timeline.schedule(); // the strip's time axis grows while the run waits
  }
}

class EventSourceRun extends Run {
  constructor(route, url) {
    super(route);
    if (url) this.open(url);
  }

  open(url) {
    const source = new EventSource(url);
    this.source = source;
    const listening = new Set(["message"]);
    const listen = (name) => {
      if (listening.has(name)) return;
      listening.add(name);
      source.addEventListener(name, (e) => {
        if (e instanceof MessageEvent) this.event(name, e.lastEventId, e.data);
      });
    };
    source.onopen = () => { $("state").textContent = "open (EventSource)"; };
    source.onmessage = (e) => this.event("message", e.lastEventId, e.data);
    source.addEventListener(state.info.tap_event, (e) => this.tap(e.data).forEach(listen));
    [this.route.events.end_event, this.route.events.error_event].filter(Boolean).forEach(listen);
    // EventSource's own "error" (no data): the connection failed or dropped. It would reconnect
    // and ask the upstream again; a console closes instead and says so.
    source.addEventListener("error", (e) => {
      if (e instanceof MessageEvent) return;
      const refused = source.readyState === EventSource.CLOSED || this.rows === 0;
      this.finish(refused
        ? "connection failed: the gateway answered an HTTP error (its JSON body is in DevTools' Network panel)"
        : "connection lost before the end event (EventSource would reconnect; closed)", false);
    });
  }

  stop() { this.finish("stopped by you", false); }

  close() { if (this.source) this.source.close(); }
}

// A route with streams: POST {path}/streams answers 201 with the stream's URL, which an
// EventSource reads (DevTools shows it); Stop sends DELETE there, which stops the upstream
// request, and the stream's last event, an error with code "cancelled", ends the run. With
// event_from, fetch reads the URL instead: without the tap nothing announces an event's name
// before it comes, and an EventSource dispatches only the names it listens for.
class StreamUrlRun extends EventSourceRun {
  constructor(route, collection, body) {
    super(route, null);
    this.url = null;
    // No tap: the tokens are in the events only when their data is the whole line.
    this.linesInData = route.events.data === "line";
    if (!this.linesInData) this.timeline.noLines();
    this.over = false; // the stream itself ended (its end or error event came)
    $("state").textContent = "creating the stream";
    this.create(collection, body).catch((error) => this.finish(`fetch failed: ${error.message}`, false));
  }

  async create(collection, body) {
    const response = await fetch(collection, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (response.status !== 201) {
      this.finish(await httpFailure(response), false);
      return;
    }
    const { url } = await response.json();
    this.url = url;
    if (this.ended) {
      this.delete(); // stopped while the POST was on its way
      return;
    }
    $("url").textContent = `POST ${collection} → 201 ${url}`;
    this.open(url);
  }

  open(url) {
    if (!this.route.events.event_from) return super.open(url);
    this.abort = new AbortController();
    fetch(url, { headers: { Accept: "text/event-stream" }, signal: this.abort.signal })
      .then(async (response) => {
        if (!response.ok) return this.finish(await httpFailure(response), false);
        $("state").textContent = "open (fetch, for event_from's names)";
        await readEventStream(response, this);
        this.finish("connection closed before the end event", false);
      })
      .catch((error) => {
        if (error.name !== "AbortError") this.finish(`fetch failed: ${error.message}`, false);
      });
  }

  event(name, id, data) {
    if (name === this.route.events.end_event || name === this.route.events.error_event) this.over = true;
    else if (this.linesInData) this.timeline.readUsage(data);
    super.event(name, id, data);
  }

  stop() {
    if (!this.url || this.over) return super.stop();
    $("state").textContent = "stopping (DELETE)";
    $("stop").disabled = true;
    this.delete().then((status) => { if (status !== 204) super.stop(); });
  }

  async delete() {
    const url = this.url;
    this.url = null;
    if (!url) return 0;
    try {
      return (await fetch(url, { method: "DELETE" })).status;
    } catch (_) {
      return 0;
    }
  }

  close() {
    super.close();
    if (this.abort) this.abort.abort();
    // Left for another stream or route: the upstream request stops now, not after the linger.
    if (!this.over) this.delete();
  }
}

async function httpFailure(response) {
  let reason = `HTTP ${response.status}`;
  try {
    const { error } = await response.json();
    reason += ` ${error.code}: ${error.message}`;
  } catch (_) { /* not our JSON error */ }
  return reason;
}

class FetchRun extends Run {
  constructor(route, url, body) {
    super(route);
    this.abort = new AbortController();
    this.read(url, body).catch((error) => {
      if (error.name !== "AbortError") this.finish(`fetch failed: ${error.message}`, false);
    });
  }

  async read(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: this.abort.signal,
    });
    if (!response.ok) {
      this.finish(await httpFailure(response), false);
      return;
    }
    $("state").textContent = "open (fetch)";
    await readEventStream(response, this);
    this.finish("connection closed before the end event", false);
  }

  stop() { this.finish("stopped by you", false); }

  close() { this.abort.abort(); }
}

// An event-stream response read to its end, each event handed to `run`.
async function readEventStream(response, run) {
  const parser = new SSEParser((name, id, data) => {
    if (name === state.info.tap_event) run.tap(data);
    else run.event(name, id, data);
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.feed(value);
  }
}

// The event-stream parsing rules (WHATWG HTML 9.2.6), for fetch: CR, LF or CRLF end a line,
// even across chunks; a blank line dispatches; ids persist.
class SSEParser {
  constructor(dispatch) {
    this.dispatch = dispatch;
    this.buffer = "";
    this.data = [];
    this.name = "";
    this.lastId = "";
    this.first = true;
  }

  feed(text) {
    if (this.first && text) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this.first = false;
    }
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    // A CR at the end of the buffer might be the first half of CRLF: keep the line until known.
    if (this.buffer === "" && text.endsWith("\r")) {
      this.buffer = lines.pop() + "\r";
    }
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.dispatch(this.name || "message", this.lastId, this.data.join("\n"));
      this.data = [];
      this.name = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.name = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
  }
}

// -- wiring ---------------------------------------------------------------------------------------

function stopStream(reason) {
  if (state.stream && !state.stream.ended) state.stream.finish(reason, false);
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  let body;
  try {
    body = JSON.parse($("body").value || "{}");
    if (typeof body !== "object" || body === null || Array.isArray(body)) throw new Error("not an object");
  } catch (error) {
    $("body-hint").textContent = `the body must be a JSON object (${error.message})`;
    return;
  }
  localStorage.setItem(`console-body:${state.route.path}`, $("body").value);
  stopStream("stopped: a new stream was started");
  const method = document.querySelector("input[name=method]:checked").value;
  const creates = method === "POST" && state.route.streams;
  const url = creates ? `${routePath(state.route)}/streams` : requestUrl(state.route, body, method);
  $("url").textContent = `${method} ${url}`;
  $("start").disabled = true;
  $("stop").disabled = false;
  if (creates) state.stream = new StreamUrlRun(state.route, url, body);
  else if (method === "GET") state.stream = new EventSourceRun(state.route, url);
  else state.stream = new FetchRun(state.route, url, body);
});

$("stop").addEventListener("click", () => {
  if (state.stream && !state.stream.ended) state.stream.stop();
});

loadRoutes();
