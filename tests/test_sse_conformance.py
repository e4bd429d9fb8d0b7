"""SSE parsing conformance: our SSEParser against the spec's table, and against Chromium.

The cases (tests/support/conformance.py) cover what web-platform-tests ``eventsource/`` and
rexxars/eventsource-parser test, each written as exact bytes and the events the spec's "event
stream interpretation" dispatches. Two kinds of test:

* pure: every case fed to SSEParser whole, one byte at a time, at every two-way split and at
  random split points must give the table's events, ids and retries;
* reference: one Chromium (Debian's, through Playwright) opens a native ``EventSource`` on every
  case served by a small aiohttp server, and what it dispatches must equal what our parser
  gives. Chromium is the reference: where it and the table disagree, this test says so.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sse import SSEEvent, SSEParser, SSERetry
from tests.support.chunking import CHUNKERS, split_at
from tests.support.conformance import CASES, Case, Expected, event_names

CASE_PARAMS = [pytest.param(each, id=each.id) for each in CASES]


def parse(chunks: list[bytes]) -> list[Expected]:
    parser = SSEParser()
    items = []
    for chunk in chunks:
        items += parser.feed(chunk)
    items += parser.flush()
    return [(i.event, i.data, i.id) if isinstance(i, SSEEvent) else i for i in items]


def two_way_split_points(raw: bytes) -> list[int]:
    """Every split point of a short case. A long one gets the points near its ends and its line
    breaks, and a stride through the middle: all of them would cost seconds for nothing new."""
    if len(raw) <= 8192:
        return list(range(len(raw) + 1))
    points = {*range(64), *range(len(raw) - 64, len(raw) + 1), *range(0, len(raw), 997)}
    for index, byte in enumerate(raw):
        if byte in b"\r\n":
            points.update(range(max(0, index - 4), min(len(raw), index + 5)))
    return sorted(points)


# -- the table itself ------------------------------------------------------------------------------


def test_case_ids_are_unique():
    ids = [each.id for each in CASES]
    assert len(ids) == len(set(ids))


def test_no_case_uses_an_event_type_the_browser_harness_listens_to_itself():
    # The page learns of the end of a case from "error" and of the connection from "open".
    assert not {"error", "open"} & set(event_names(CASES))


# -- pure: our parser against the table -----------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_parser_gives_the_spec_events_whole_and_byte_by_byte(case: Case, chunker):
    assert parse(chunker(case.raw)) == list(case.expected)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_parser_gives_the_spec_events_at_every_two_way_split(case: Case):
    wrong = {
        point: got
        for point in two_way_split_points(case.raw)
        if (got := parse(split_at(case.raw, [point]))) != list(case.expected)
    }
    assert not wrong, f"split points giving other events: {sorted(wrong)[:20]}"


@settings(max_examples=20, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_parser_gives_the_spec_events_at_random_split_points(case: Case, data):
    # At most a dozen cuts: chunking.splits() would draw up to len(raw) of them.
    cuts = data.draw(st.lists(st.integers(0, len(case.raw)), max_size=12))
    assert parse(split_at(case.raw, cuts)) == list(case.expected)


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
        ours = [item for item in parse([each.raw]) if not isinstance(item, SSERetry)]
        if chromium != ours:
            spec = [item for item in each.expected if not isinstance(item, SSERetry)]
            mismatches.append(
                f"{each.id}: bytes {short(each.raw)}\n"
                f"  chromium: {short(chromium)}\n"
                f"  ours:     {short(ours)}\n"
                f"  table:    {short(spec)}"
            )
    assert not mismatches, "Chromium and our parser disagree:\n" + "\n".join(mismatches)
