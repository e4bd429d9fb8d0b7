"""The configuration's models: one typed tree, frozen, validated by pydantic.

Unknown keys are errors, so a typo never silently falls back to a default; a failure's one-line
message names the key (``routes[2].upstream: not a URL``, :func:`describe_error`). The pure
modules never see these models: ``EventsConfig.rules`` hands the converter plain frozen rules.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yarl import URL

from proxy.body_schema import BodySchema
from proxy.convert import EventRules
from proxy.errors import ConfigError, InvalidPointer
from proxy.headers import HOP_BY_HOP_HEADERS
from proxy.paths import (
    CONSOLE_PATH,
    DEMO_PATHS,
    HEALTH_PATH,
    METRICS_PATH,
    PLACEHOLDER,
    READY_PATH,
    placeholder_names,
)
from proxy.pointer import JsonPointer
from proxy.usage import UsagePointers, UsageTally

__all__ = [
    "AuthConfig",
    "BodyConfig",
    "CorsConfig",
    "EventsConfig",
    "GatewayConfig",
    "JwtConfig",
    "LimitsConfig",
    "ResumeConfig",
    "RouteConfig",
    "ServerConfig",
    "TimeoutsConfig",
    "describe_error",
]

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _pointer(text: str) -> JsonPointer:
    try:
        return JsonPointer(text)
    except InvalidPointer as exc:
        raise ValueError(str(exc)) from None


def _event_name(name: str) -> str:
    if not name or re.search(r"[\r\n]", name):
        raise ValueError("an event name must be non-empty and have no line breaks")
    return name


def _header_name(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid header name")
    return name


EventName = Annotated[str, AfterValidator(_event_name)]
HeaderName = Annotated[str, AfterValidator(_header_name)]


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    mode: Literal["dev", "production"] = "production"
    """``dev``: the stream console on and readable log lines; ``production``: neither."""
    demo: bool = False
    """Serve the demo page at ``/`` and the built-in demo upstream under ``/demo/``."""
    console: bool | None = None
    """The stream console at ``/_console``; unset means on in dev mode, off in production."""
    log_format: Literal["dev", "json"] | None = None
    """One line per stream: ``dev`` (aligned, coloured on a TTY) or ``json``; unset follows mode."""
    max_streams: int | None = Field(None, ge=1)
    """Open streams for the whole gateway; beyond it, 503 with ``Retry-After``."""
    metrics: bool = True
    """Prometheus metrics at ``/metrics``."""
    header_timeout: float = Field(10, gt=0)
    """Seconds a new connection has to send its first request's headers (slowloris); then 408."""
    keepalive_timeout: float = Field(75, gt=0)
    """Seconds an idle kept-alive connection stays open."""
    write_timeout: float | None = Field(30, gt=0)
    """Seconds a write to a client that does not read may stay blocked; then the connection is
    cut (and the upstream request closed). ``null``: wait forever."""
    drain_seconds: float = Field(10, ge=0)
    """On SIGTERM: the most time open streams get to take their ``shutting_down`` event."""
    trace_propagation: bool = True
    """Send W3C ``traceparent``/``tracestate`` upstream: the client's trace with the gateway as
    a hop, or a new trace. Off: no trace header goes upstream unless a route sets or forwards
    one."""

    @property
    def console_enabled(self) -> bool:
        return self.mode == "dev" if self.console is None else self.console

    @property
    def effective_log_format(self) -> Literal["dev", "json"]:
        if self.log_format is not None:
            return self.log_format
        return "dev" if self.mode == "dev" else "json"


class BodyConfig(_Model):
    defaults: dict[str, Any] = Field(default_factory=dict)
    """Merged under the client's own fields (deeply: nested objects merge too)."""
    pinned: dict[str, Any] = Field(default_factory=dict)
    """Merged over the client's fields, last and deeply: a client value for a pinned field never
    reaches the upstream (a route whose key pays for one model keeps that model)."""
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    """A JSON Schema the client's body must satisfy (``400 invalid_body`` otherwise); in the file,
    inline or as the path of a JSON or YAML file (relative to the configuration file)."""
    query_param: str | None = "body"
    """GET: this query parameter holds a URL-encoded JSON object (nested JSON for EventSource)."""
    last_event_id: str | None = None
    """Body field that receives the client's ``Last-Event-ID``, if the upstream wants it there."""

    @field_validator("json_schema", mode="before")
    @classmethod
    def _load_schema(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            base = Path((info.context or {}).get("base", "."))
            value = _schema_file(base / value)
        if isinstance(value, dict):
            BodySchema(value)  # a schema that is not valid for its draft stops the start-up
        return value

    @functools.cached_property
    def schema_check(self) -> BodySchema | None:
        return None if self.json_schema is None else BodySchema(self.json_schema)


def _schema_file(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not JSON or YAML: {str(exc).splitlines()[0]}") from None


class EventsConfig(_Model):
    event: EventName = "message"
    """Event name; also the fallback when ``event_from`` finds nothing on a line."""
    event_from: JsonPointer | None = None
    id: Literal["sequence", "none"] | JsonPointer = "sequence"
    data: Literal["line"] | JsonPointer = "line"
    end_event: EventName | None = "end"
    error_event: EventName = "error"
    heartbeat: float = Field(15, ge=0)
    retry: int | None = Field(3000, ge=0)
    error_from: JsonPointer | None = None
    """A line with a non-null value here (Ollama's ``/error``) is an ``upstream_error`` event."""
    complete_when: JsonPointer | None = None
    """The stream is complete only once a line has ``true`` here (Ollama's ``/done``); an upstream
    EOF before that is an ``incomplete`` error event instead of the end event."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @functools.cached_property
    def rules(self) -> EventRules:
        """The plain rules the converter reads (it never sees this model)."""
        return EventRules(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EventRules)})

    @field_validator("complete_when", "error_from", mode="before")
    @classmethod
    def _parse_complete_when(cls, value: Any) -> Any:
        return _pointer(value) if isinstance(value, str) else value

    @field_validator("event_from", mode="before")
    @classmethod
    def _parse_event_from(cls, value: Any) -> Any:
        return _pointer(value) if isinstance(value, str) else value

    @field_validator("id", mode="before")
    @classmethod
    def _parse_id(cls, value: Any) -> Any:
        return _keyword_or_pointer(value, ("sequence", "none"))

    @field_validator("data", mode="before")
    @classmethod
    def _parse_data(cls, value: Any) -> Any:
        return _keyword_or_pointer(value, ("line",))


def _keyword_or_pointer(value: Any, keywords: tuple[str, ...]) -> str | JsonPointer:
    choices = ", ".join(repr(k) for k in keywords)
    if not isinstance(value, str) or not (value in keywords or value.startswith("/")):
        raise ValueError(f"must be {choices} or a JSON Pointer such as /message/content")
    return value if value in keywords else _pointer(value)


class TimeoutsConfig(_Model):
    connect: float = Field(5, gt=0)
    """Seconds to connect to the upstream (and to get a pooled connection)."""
    read: float | None = Field(60, gt=0)
    """Seconds of upstream silence (before headers or between chunks) that end the stream."""


class LimitsConfig(_Model):
    max_line_bytes: int = Field(1 << 20, ge=16)
    max_body_bytes: int = Field(1 << 20, ge=2)
    """Largest client request body (POST JSON, or the GET ``?body=`` value) accepted."""
    max_streams: int | None = Field(None, ge=1)
    """Open streams on this route; beyond it, 503 with ``Retry-After``."""
    max_duration: float | None = Field(None, gt=0)
    """Seconds a stream may last; then a ``max_duration`` error event ends it."""


def _origin(text: str) -> str:
    try:
        url = URL(text)
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host or url.path_qs not in ("", "/"):
        raise ValueError(f"{text!r} is not an origin such as https://app.example.com")
    return str(url.origin())


class CorsConfig(_Model):
    allow_origins: list[str] = Field(min_length=1)
    """Exact origins (``https://app.example.com``) or ``["*"]``."""
    allow_credentials: bool = False
    """Cookies and HTTP auth cross-origin (``new EventSource(url, {withCredentials: true})``)."""
    allow_headers: list[HeaderName] = Field(default_factory=lambda: ["Content-Type"])
    max_age: int = Field(600, ge=0)
    """Seconds a browser may cache a preflight answer."""

    @field_validator("allow_origins")
    @classmethod
    def _normalize_origins(cls, origins: list[str]) -> list[str]:
        # Browsers send the serialized origin: lower case, no default port, no path.
        return [origin if origin == "*" else _origin(origin) for origin in origins]

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError(
                "allow_origins '*' cannot be used with allow_credentials: list the origins"
            )
        return self

    @property
    def any_origin(self) -> bool:
        return "*" in self.allow_origins


_HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"]


def _default_algorithms() -> list[JwtAlgorithm]:
    return ["HS256"]


class JwtConfig(_Model):
    algorithms: list[JwtAlgorithm] = Field(default_factory=_default_algorithms, min_length=1)
    secret: str | None = None
    """The shared secret for HS* (from the environment: ``${JWT_SECRET}``)."""
    public_key: str | None = None
    """The PEM public key for RS*/ES*."""
    audience: str | list[str] | None = None
    issuer: str | None = None
    leeway: float = Field(30, ge=0)
    """Seconds of clock skew allowed on ``exp`` and ``nbf``."""
    require_exp: bool = True

    @model_validator(mode="after")
    def _one_key_for_one_family(self) -> JwtConfig:
        # Mixing families lets a token signed with HMAC over the public key pass as RS256: the
        # classic algorithm confusion. One family, and the key that belongs to it.
        hmac = {a in _HMAC_ALGORITHMS for a in self.algorithms}
        if len(hmac) > 1:
            raise ValueError("algorithms: HS* and RS*/ES* cannot be mixed")
        if hmac == {True} and not self.secret:
            raise ValueError("HS* algorithms need 'secret'")
        if hmac == {False} and not self.public_key:
            raise ValueError("RS*/ES* algorithms need 'public_key'")
        if self.secret and self.public_key:
            raise ValueError("give 'secret' (HS*) or 'public_key' (RS*/ES*), not both")
        return self


class AuthConfig(_Model):
    header: HeaderName | None = "Authorization"
    """Where to look first; ``Authorization`` is read as ``Bearer <token>``."""
    cookie: str | None = None
    query_param: str | None = None
    """For EventSource, which cannot send headers; removed before the body is built."""
    api_keys: list[str] = Field(default_factory=list)
    jwt: JwtConfig | None = None

    @model_validator(mode="after")
    def _something_to_check_somewhere_to_look(self) -> AuthConfig:
        if not self.api_keys and self.jwt is None:
            raise ValueError("give 'api_keys' or 'jwt' (or both)")
        if any(len(key) < 8 for key in self.api_keys):
            raise ValueError("api_keys: each key needs at least 8 characters (is one unset?)")
        if self.header is None and self.cookie is None and self.query_param is None:
            raise ValueError("give at least one of 'header', 'cookie', 'query_param'")
        return self


class ResumeConfig(_Model):
    store: str = "memory"
    """``memory`` (this process) or a Redis URL (``redis://host:6379/0``) shared by replicas."""
    max_events: int = Field(1000, ge=1)
    """Events kept per stream (the oldest go first)."""
    ttl: float = Field(300, gt=0)
    """Seconds a stream is kept after its last event."""
    linger: float = Field(30, gt=0)
    """Seconds the upstream is still read with no client attached, waiting for a reconnect."""

    @field_validator("store")
    @classmethod
    def _memory_or_redis(cls, store: str) -> str:
        if store != "memory" and not store.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be 'memory' or a Redis URL such as redis://127.0.0.1:6379/0")
        return store


class UsageConfig(_Model):
    prompt_tokens: JsonPointer | None = None
    """Where a line holds the prompt's token count (Ollama: ``/prompt_eval_count``)."""
    completion_tokens: JsonPointer | None = None
    """Where a line holds the answer's token count (Ollama: ``/eval_count``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @field_validator("prompt_tokens", "completion_tokens", mode="before")
    @classmethod
    def _parse_pointer(cls, value: Any) -> Any:
        return _pointer(value) if isinstance(value, str) else value

    @functools.cached_property
    def pointers(self) -> UsagePointers:
        return UsagePointers(
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens
        )


class StreamsConfig(_Model):
    share: bool = False
    """An upstream request equal to an open stream's (method, URL, body, headers) joins that
    stream instead of opening another (with a Redis store: across replicas)."""


Framing = Literal["auto", "ndjson", "json-seq", "sse", "json"]
Method = Literal["GET", "POST"]
_ALL_METHODS: Final[tuple[Method, ...]] = ("GET", "POST")


class RouteConfig(_Model):
    path: str
    upstream: str
    methods: list[Method] = Field(default_factory=lambda: list(_ALL_METHODS), min_length=1)
    upstream_method: Literal["POST", "GET"] = "POST"
    headers: dict[HeaderName, str] = Field(default_factory=dict)
    forward_headers: list[HeaderName] = Field(default_factory=list)
    framing: Framing = "auto"
    """How to read the upstream body; ``auto`` goes by its Content-Type."""
    body: BodyConfig = Field(default_factory=BodyConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    cors: CorsConfig | None = None
    """Cross-origin browsers allowed to open this route; without it, same-origin pages only."""
    auth: AuthConfig | None = None
    """A credential every request must carry (401 before any upstream request otherwise)."""
    resume: ResumeConfig | None = None
    """Keep each stream's events so a reconnecting client resumes without a second upstream
    request (ids become ``<stream key>-<n>``)."""
    usage: UsageConfig | None = None
    """Token counts to read from the lines, for the metrics and the access log."""
    streams: StreamsConfig | None = None
    """Streams as resources: ``POST {path}/streams`` answers ``201`` with a stream URL that
    ``GET`` reads (``EventSource``) and ``DELETE`` stops. Needs ``resume``."""

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("must start with '/'")
        for match in PLACEHOLDER.finditer(path):
            try:
                re.compile(match.group(2) or "")
            except re.error as exc:
                raise ValueError(
                    f"{match.group(0)}: not a valid regular expression: {exc}"
                ) from None
        return path

    @field_validator("upstream")
    @classmethod
    def _check_upstream(cls, upstream: str) -> str:
        # Placeholders are checked against the path below; fill them with a dummy to parse.
        probe = PLACEHOLDER.sub("x", upstream)
        if probe.startswith("/"):
            return upstream  # this gateway itself (the built-in demo upstream)
        try:
            url = URL(probe)
        except ValueError:
            raise ValueError("not a URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("not a URL")
        if PLACEHOLDER.search(upstream.split("://", 1)[1].split("/", 1)[0]):
            raise ValueError("placeholders may not be used in the host")
        return upstream

    @field_validator("forward_headers")
    @classmethod
    def _no_hop_by_hop(cls, names: list[str]) -> list[str]:
        for name in names:
            if name.lower() in HOP_BY_HOP_HEADERS:
                raise ValueError(f"{name} is a hop-by-hop header and is never forwarded")
        return names

    @model_validator(mode="after")
    def _resume_numbers_the_events(self) -> RouteConfig:
        if self.resume is not None and self.events.id != "sequence":
            raise ValueError(
                "resume needs events.id: sequence (the gateway numbers the events it keeps)"
            )
        return self

    @model_validator(mode="after")
    def _streams_have_urls(self) -> RouteConfig:
        if self.streams is None:
            return self
        if self.resume is None:
            raise ValueError(
                "streams needs resume (a stream's events are kept in its replay store)"
            )
        for match in PLACEHOLDER.finditer(self.path):
            if match.group(2) and re.fullmatch(match.group(2), "a/streams/b"):
                raise ValueError(
                    f"streams cannot be used on a path whose {match.group(0)} spans segments "
                    "({path}/streams/{id} would be one of its own URLs)"
                )
        return self

    @model_validator(mode="after")
    def _upstream_uses_path_variables(self) -> RouteConfig:
        available = set(self.path_variables)
        for name in placeholder_names(self.upstream):
            if name not in available:
                raise ValueError(f"upstream uses {{{name}}}, which the path does not define")
        return self

    def usage_tally(self) -> UsageTally | None:
        """A fresh tally of a stream's token counts, for a route with ``usage``."""
        return None if self.usage is None else UsageTally(self.usage.pointers)

    @functools.cached_property
    def secrets(self) -> frozenset[str]:
        """What no error text may carry to the client or a log: the values of the headers the route
        injects, each long word of them (an API may echo a token without its ``Bearer``), and
        the password and query values of the upstream URL."""
        found: set[str] = set()
        for value in self.headers.values():
            found.add(value)
            found.update(word for word in value.split() if len(word) >= 8)
        if not self.upstream.startswith("/"):
            # Credentials in the upstream URL itself: its password and its query values.
            url = URL(PLACEHOLDER.sub("x", self.upstream))
            found.update(filter(None, [url.password, url.raw_password]))
            found.update(url.query.values())
            found.update(url.raw_query_string.split("&") if url.raw_query_string else ())
        return frozenset(secret for secret in found if len(secret) >= 4)

    @property
    def path_variables(self) -> list[str]:
        return placeholder_names(self.path)

    @functools.cached_property
    def multi_segment_variables(self) -> frozenset[str]:
        """Path variables whose regex lets them span segments (``{tail:.*}``): they go upstream as
        a path of their own, each segment escaped, instead of as one segment."""
        return frozenset(
            match.group(1)
            for match in PLACEHOLDER.finditer(self.path)
            if match.group(2) is not None and re.fullmatch(match.group(2), "a/b")
        )


class GatewayConfig(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    routes: list[RouteConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_routes(self) -> GatewayConfig:
        reserved = {HEALTH_PATH, READY_PATH, *(DEMO_PATHS if self.server.demo else ())}
        if self.server.console_enabled:
            reserved.add(CONSOLE_PATH)
        if self.server.metrics:
            reserved.add(METRICS_PATH)
        seen: set[tuple[str, str]] = set()
        # These checks span routes, so the message names the key itself (see describe_error).
        for index, route in enumerate(self.routes):
            if route.path in reserved:
                raise ValueError(
                    f"routes[{index}].path: {route.path} is served by the gateway itself"
                )
            for method in route.methods:
                if (method, route.path) in seen:
                    raise ValueError(f"routes[{index}]: {method} {route.path} is configured twice")
                seen.add((method, route.path))
        return self

    def with_overrides(self, **server: Any) -> GatewayConfig:
        """The same configuration with ``server:`` settings replaced where the value is not None
        (``--host``, ``--port``, ``--mode``, ``--log-format``), validated again."""
        update = {key: value for key, value in server.items() if value is not None}
        merged = {**self.server.model_dump(), **update}
        try:
            return GatewayConfig.model_validate({"server": merged, "routes": self.routes})
        except ValidationError as exc:
            raise ConfigError(describe_error(exc)) from None


def describe_error(exc: ValidationError, prefix: str = "") -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = prefix
    for part in first["loc"]:
        if part == "[key]":  # pydantic's marker for "the key itself failed"
            continue
        if isinstance(part, int):
            where = f"{where}[{part}]"
        else:
            where = f"{where}.{part}" if where else str(part)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"
