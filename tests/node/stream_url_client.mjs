// Reads a stream URL with npm `eventsource` (4.x) and lets it reconnect by itself, as a page
// would, until it stops for good. Prints one JSON line per thing the client did, in order:
//   {kind: "request", lastEventId, status}   a fetch it made (its Last-Event-ID header, or null)
//   {kind: "open"}                            a connection opened
//   {kind: "event", type, data, lastEventId}  a dispatched MessageEvent
//   {kind: "error", code, message, readyState} a connection error (readyState 0: it will
//                                              reconnect; 2: it has stopped)
//
// usage: node stream_url_client.mjs URL [EVENT_NAME...]
// Unlike eventsource_client.mjs it does not close the source on `end` and does not give up on a
// connection error: reconnecting after a cut and after the server's end, and stopping on 204, is
// what is under test. Node exits once the source is CLOSED (204 or another failed connection):
// nothing is left to wait for then.
import { EventSource } from "eventsource";

const [url, ...names] = process.argv.slice(2);

function print(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

// The fetch that EventSource would use anyway, watched: each request's Last-Event-ID and status.
async function watchedFetch(input, init) {
  const response = await fetch(input, init);
  const lastEventId = init.headers["Last-Event-ID"] ?? null;
  print({ kind: "request", lastEventId, status: response.status });
  return response;
}

const source = new EventSource(url, { fetch: watchedFetch });

function printEvent({ type, data, lastEventId }) {
  print({ kind: "event", type, data, lastEventId });
}

source.onopen = () => print({ kind: "open" });
source.onmessage = printEvent;
for (const name of ["end", ...names]) source.addEventListener(name, printEvent);
source.addEventListener("error", (event) => {
  if (event instanceof MessageEvent) {
    printEvent(event); // the gateway's in-band error event
    return;
  }
  const { code, message } = event;
  const { readyState } = source;
  print({ kind: "error", code: code ?? null, message: message ?? null, readyState });
});
