// Reads a gateway stream with npm `eventsource` (4.x: WHATWG EventSource for Node 20) and prints
// one JSON line per dispatched MessageEvent: {type, data, lastEventId}.
//
// usage: node eventsource_client.mjs URL [EVENT_NAME...]
// The named events get listeners, unnamed ones arrive through onmessage. An `error` MessageEvent is
// the gateway's in-band error; any other `error` is a failed connection, which exits 1 at once
// (EventSource would otherwise reconnect forever). `end` closes the source, as a page does.
import { EventSource } from "eventsource";

const [url, ...names] = process.argv.slice(2);
const source = new EventSource(url);

function print(event) {
  const { type, data, lastEventId } = event;
  process.stdout.write(JSON.stringify({ type, data, lastEventId }) + "\n");
}

source.onmessage = print;
for (const name of names) source.addEventListener(name, print);
source.addEventListener("error", (event) => {
  if (event instanceof MessageEvent) {
    print(event);
    return;
  }
  process.stderr.write(`connection failed: ${event.code ?? ""} ${event.message ?? ""}\n`);
  process.exitCode = 1;
  source.close();
});
source.addEventListener("end", (event) => {
  print(event);
  source.close();
});
