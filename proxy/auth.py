"""Inbound auth for a route: a credential from a header, a cookie or a query parameter, checked
against API keys from the environment or as a JWT, before any upstream request.

Strategy: :func:`find_credential` and :class:`Authenticator` are pure (PyJWT does the JWT work:
signatures, ``exp``/``nbf`` with leeway, ``aud``, ``iss``), so every rule is tested without a
server. The aiohttp side wraps a route's handler. A native ``EventSource`` cannot send headers,
which is why a cookie or a query parameter is accepted at all; the query parameter is removed
before the body is built (so it never goes upstream) and query strings are never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Final

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler

from .config import AuthConfig, RouteConfig
from .errors import HTTPFailure
from .state import hide_query_param

__all__ = ["Authenticator", "Unauthorized", "add_auth", "find_credential"]

_BEARER: Final = "bearer "


class Unauthorized(HTTPFailure):
    def __init__(self, message: str) -> None:
        super().__init__(
            401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="proxy"'}
        )


def find_credential(
    auth: AuthConfig,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    query: Mapping[str, str],
) -> str | None:
    """The credential the request carries, from the first configured place that has one."""
    if auth.header is not None:
        value = headers.get(auth.header)
        if value is not None:
            if auth.header.lower() == "authorization":
                # "Bearer <token>"; any other scheme is not ours to read.
                return value[len(_BEARER) :].strip() if value.lower().startswith(_BEARER) else ""
            return value.strip()
    if auth.cookie is not None and auth.cookie in cookies:
        return cookies[auth.cookie]
    if auth.query_param is not None and auth.query_param in query:
        return query[auth.query_param]
    return None


class Authenticator:
    def __init__(self, auth: AuthConfig) -> None:
        self._auth = auth
        self._keys = [key.encode() for key in auth.api_keys]
        jwt_config = auth.jwt
        self._jwt_key: str | None = None
        if jwt_config is not None:
            self._jwt_key = jwt_config.secret or jwt_config.public_key

    def where(self) -> str:
        places = []
        if self._auth.header is not None:
            places.append(f"the {self._auth.header} header")
        if self._auth.cookie is not None:
            places.append(f"the cookie {self._auth.cookie!r}")
        if self._auth.query_param is not None:
            places.append(f"the query parameter {self._auth.query_param!r}")
        return " or ".join(places)

    def check(self, credential: str | None) -> None:
        """Nothing when ``credential`` is good; :class:`Unauthorized` saying why otherwise."""
        if not credential:
            raise Unauthorized(f"this route needs a credential in {self.where()}")
        # compare_digest on every key: no early exit that would time which key came close.
        given = credential.encode()
        matches = [hmac.compare_digest(given, key) for key in self._keys]
        if any(matches):
            return
        if self._auth.jwt is None:
            raise Unauthorized("the credential is not valid")
        self._check_jwt(credential)

    def _check_jwt(self, token: str) -> None:
        config = self._auth.jwt
        assert config is not None
        assert self._jwt_key is not None
        try:
            jwt.decode(
                token,
                self._jwt_key,
                algorithms=config.algorithms,
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway,
                options={"require": ["exp"] if config.require_exp else []},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is not for this audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token is from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("the credential is not valid") from None


def add_auth(route: RouteConfig, handler: Handler) -> Handler:
    """``handler`` behind the route's auth (unchanged when the route has none)."""
    if route.auth is None:
        return handler
    auth = route.auth
    authenticator = Authenticator(auth)

    async def checked(request: web.Request) -> web.StreamResponse:
        credential = find_credential(auth, request.headers, request.cookies, request.query)
        authenticator.check(credential)
        if auth.query_param is not None:
            hide_query_param(request, auth.query_param)  # ours: it never goes upstream
        return await handler(request)

    return checked
