"""What the tests share, one helper per job, imported as ``tests.support.<module>``.

Fixtures stay in ``conftest.py``; everything here is a plain function or class:

* ``upstreams``: the fake-upstream kit on aiohttp: an NDJSON streamer (:func:`ndjson_handler`)
  and :func:`recorded`, which logs every request an upstream gets as a :class:`Seen`;
  ``services`` builds the fakes of real services (Ollama, Kubernetes, ...) from those parts, and
  ``raw_upstream`` is the byte-level one (raw sockets, scripted faults, leak checks).
* ``sse``: the one SSE reader (whole bodies, or an open response event by event).
* ``processes``: the one launcher of ``python -m proxy``.
* ``waiting``: :func:`eventually`, the one poll-until-true.
* ``dockerfile``: the Dockerfile read as data, for the test that runs the image's command.
* ``fronts``: nginx and Caddy run from their ``examples/`` files as HTTP/2 fronts, and the
  self-signed certificate they serve.
* ``chunking``, ``conformance``, ``shared_stream``, ``browser``, ``credentials``, ``tools``:
  re-chunking for the decoders, the SSE conformance table, the stream every third-party client
  reads, the page-side EventSource harness, the auth tests' key and tokens, and the machine's
  tools (Chromium, Node, redis-server).
"""

from pathlib import Path

#: The repository's root: where ``python -m proxy`` runs and ``config.yaml``, ``examples/`` live.
ROOT = Path(__file__).resolve().parents[2]
