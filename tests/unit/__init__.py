"""Pure modules, byte by byte: framing, SSE, pointers, conversion, config, upstream builders, auth and
CORS decisions, fuzz properties, the conformance table."""
