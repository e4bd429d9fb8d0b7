// Feeds a captured event stream to `eventsource-parser` in seeded random chunks and prints, per
// seed, one JSON line: {seed, chunks, events: [{type, data, lastEventId}], retries: [ms]}.
//
// usage: node parse_chunks.mjs FILE SEED...
// Chunks are cut on bytes (often 1-3 bytes long, so many cuts fall inside UTF-8 characters and
// between field name and value) and decoded with one streaming TextDecoder, as EventSource does.
// eventsource-parser reports only the id written in each block; carrying the last id over to
// later events is the client's job in the spec, so it is done here the way EventSource does it.
import { readFileSync } from "node:fs";
import { createParser } from "eventsource-parser";

const [file, ...seeds] = process.argv.slice(2);
const raw = readFileSync(file);

// mulberry32: a tiny seeded PRNG, so a failing seed can be replayed.
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

for (const seed of seeds.map(Number)) {
  const next = random(seed);
  const events = [];
  const retries = [];
  let lastEventId = "";
  const parser = createParser({
    onEvent(event) {
      if (typeof event.id === "string") lastEventId = event.id;
      events.push({ type: event.event ?? "message", data: event.data, lastEventId });
    },
    onRetry(ms) {
      retries.push(ms);
    },
    onError(error) {
      throw error;
    },
  });
  const decoder = new TextDecoder();
  let chunks = 0;
  for (let start = 0; start < raw.length; chunks++) {
    const size = next() < 0.5 ? 1 + Math.floor(next() * 3) : 1 + Math.floor(next() * 1024);
    const end = Math.min(start + size, raw.length);
    parser.feed(decoder.decode(raw.subarray(start, end), { stream: end < raw.length }));
    start = end;
  }
  process.stdout.write(JSON.stringify({ seed, chunks, events, retries }) + "\n");
}
