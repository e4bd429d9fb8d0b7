# ndjson-sse-proxy: the gateway with the bundled config (mount your own at /app/config.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

RUN pip install --no-cache-dir "uv==0.13.9"

WORKDIR /app
# Dependencies first, from the lock file, so code changes do not re-install them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY proxy ./proxy
COPY config.yaml ./
RUN uv sync --locked --no-dev \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --shell /usr/sbin/nologin gateway

# Numeric, so a runtime can tell it is not root without the image's /etc/passwd
# (Kubernetes' runAsNonRoot refuses a named USER it cannot resolve).
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# The arguments are the CMD, so `docker run IMAGE --workers 2 ...` or a Kubernetes `args:`
# replaces just them.
ENTRYPOINT ["/app/.venv/bin/python", "-m", "proxy"]
CMD ["--config", "/app/config.yaml", "--host", "0.0.0.0", "--port", "8080", "--mode", "production"]
