"""The benchmark suite: the gateway against direct reads, a thin aiohttp passthrough and nginx, all
in one run against one upstream. ``uv run python -m bench --help``; see bench/README.md.

Processes: ``upstream`` (NDJSON server), ``passthrough`` (the yardstick proxy), nginx, the
gateway, and ``client`` (the load client), each separate; ``run`` starts and stops them,
``figures`` measures, ``report`` prints and plots.
"""
