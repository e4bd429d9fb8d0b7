"""SSE parsing conformance against the reference: one Chromium (Debian's, through Playwright) opens
a native ``EventSource`` on every case of the table (tests/support/conformance.py), served by a
small aiohttp server, and what it dispatches must equal what our parser gives. Where Chromium and
the table disagree, this test says so. Our parser against the table alone:
tests/unit/test_sse_conformance.py.
"""

from __future__ import annotations

from aiohttp import web

from proxy.sse import SSERetry
from tests.support.conformance import CASES, event_names, parse_chunks

# -- reference: Chromium's EventSource against our parser ------------------------------------------

CONNECTING, CLOSED = 0, 2  # EventSource.readyState
PAGE = "<!doctype html><meta charset=utf-8><title>SSE conformance</title>"

# For each case: fetch the body (to prove the browser gets the exact bytes), then open an
# EventSource and record every event until the first "error", which the end of the body fires;
# close() there, or the browser would reconnect after its retry delay. readyState at that error
# tells a normal end (CONNECTING: it wants to reconnect) from a refused response (CLOSED).
RUN_CASES_JS = """
async ({count, types}) => {
  const hex = (buffer) =>
    Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  const run = (n) => new Promise((resolve) => {
    const source = new EventSource(`/case/${n}`);
    const events = [];
    let opened = false;
    const record = (e) => events.push([e.type, e.data, e.lastEventId]);
    for (const type of types) source.addEventListener(type, record);
    source.addEventListener("open", () => { opened = true; });
    const timer = setTimeout(() => {
      source.close();
      resolve({opened, events, readyState: null});
    }, 5000);
    source.addEventListener("error", () => {
      clearTimeout(timer);
      const readyState = source.readyState;
      source.close();
      resolve({opened, events, readyState});
    });
  });
  const results = [];
  for (let n = 0; n < count; n++) {
    const body = hex(await (await fetch(`/case/${n}`, {cache: "no-store"})).arrayBuffer());
    results.push({...(await run(n)), body});
  }
  return results;
}
"""


def conformance_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def serve_case(request: web.Request) -> web.StreamResponse:
        each = CASES[int(request.match_info["n"])]
        response = web.StreamResponse(
            headers={"Content-Type": each.content_type, "Cache-Control": "no-store"}
        )
        response.content_length = len(each.raw)
        response.force_close()  # the body, then the end of the connection
        await response.prepare(request)
        await response.write(each.raw)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/case/{n:[0-9]+}", serve_case)
    return app


def short(value: object, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


async def test_chromium_eventsource_dispatches_what_our_parser_gives(browser, aiohttp_server):
    server = await aiohttp_server(conformance_app())
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{server.port}/")
    results = await page.evaluate(RUN_CASES_JS, {"count": len(CASES), "types": event_names(CASES)})

    mismatches = []
    for each, result in zip(CASES, results, strict=True):
        if result["body"] != each.raw.hex():
            mismatches.append(
                f"{each.id}: the browser received {short(result['body'])}, not {each.raw.hex()}"
            )
            continue
        if each.chromium_refuses:
            if result["opened"] or result["readyState"] != CLOSED or result["events"]:
                mismatches.append(
                    f"{each.id}: expected Chromium to refuse the response ({each.chromium_refuses})"
                    f", got {short(result)}"
                )
            continue
        if not result["opened"] or result["readyState"] != CONNECTING:
            mismatches.append(f"{each.id}: EventSource did not open and end cleanly: {result}")
            continue
        chromium = [tuple(event) for event in result["events"]]
        # A retry field changes nothing a page can see; the pure tests check ours.
        ours = [item for item in parse_chunks([each.raw]) if not isinstance(item, SSERetry)]
        if chromium != ours:
            spec = [item for item in each.expected if not isinstance(item, SSERetry)]
            mismatches.append(
                f"{each.id}: bytes {short(each.raw)}\n"
                f"  chromium: {short(chromium)}\n"
                f"  ours:     {short(ours)}\n"
                f"  table:    {short(spec)}"
            )
    assert not mismatches, "Chromium and our parser disagree:\n" + "\n".join(mismatches)
