"""When the gateway sets OpenTelemetry's SDK up to export by OTLP: only when OpenTelemetry's
standard variables ask for it (an endpoint, and OTLP as the traces exporter, its default)."""

from __future__ import annotations

import pytest

from proxy.cli import otlp_requested


@pytest.mark.parametrize(
    ("otel", "wanted"),
    [
        pytest.param({}, False, id="nothing-set"),
        pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True, id="an-endpoint"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
            True,
            id="a-traces-endpoint",
        ),
        pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False, id="an-empty-endpoint"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"},
            False,
            id="exporter-none",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "console"},
            False,
            id="another-exporter",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_TRACES_EXPORTER": "console, otlp",
            },
            True,
            id="otlp-among-others",
        ),
    ],
)
def test_which_environments_ask_for_otlp_export(otel, wanted):
    assert otlp_requested(otel) is wanted
