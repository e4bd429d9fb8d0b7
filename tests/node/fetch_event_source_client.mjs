// POSTs a JSON body with one custom header through `@microsoft/fetch-event-source` 2.x on Node's
// own fetch, and prints one JSON line per message: {event, data, id, retry}, exactly as the
// library hands them to onmessage (it calls onmessage for every blank line, retry-only blocks too).
//
// usage: node fetch_event_source_client.mjs URL JSON_BODY HEADER_NAME HEADER_VALUE
//
// The library was written for browsers. Without `window` and `document`, Node 20 reads the
// messages and then throws ReferenceError in dispose() (run on abort and at the end of the body):
// it calls document.removeEventListener and window.clearTimeout even with openWhenHidden, and
// window.fetch / window.setTimeout unless given `fetch`. So two stubs, and `openWhenHidden: true`
// so that no visibility listener is registered at all.
import { fetchEventSource } from "@microsoft/fetch-event-source";

globalThis.window = globalThis;
globalThis.document = { hidden: false, addEventListener() {}, removeEventListener() {} };

const [url, body, headerName, headerValue] = process.argv.slice(2);
const controller = new AbortController();

await fetchEventSource(url, {
  method: "POST",
  headers: { "Content-Type": "application/json", [headerName]: headerValue },
  body,
  signal: controller.signal,
  openWhenHidden: true,
  onmessage({ event, data, id, retry }) {
    process.stdout.write(JSON.stringify({ event, data, id, retry: retry ?? null }) + "\n");
    if (event === "end") controller.abort(); // a finished stream must not be fetched again
  },
  onerror(error) {
    throw error; // rethrowing stops the library's endless retries
  },
});
