"""Real clients against a real gateway: Chromium (Playwright), Node SSE libraries, Python SSE
libraries."""
