"""A real gateway with real upstreams over loopback: HTTP, streaming, limits and drain, faults,
security, metrics, the console, resume, the CLI and its processes, the examples."""
