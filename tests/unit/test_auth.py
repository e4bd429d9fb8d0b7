"""Inbound auth, the pure decision: where the credential is found, API keys and JWTs (PyJWT), and
the config errors. Over real sockets: tests/e2e/test_auth.py."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy import parse_config
from proxy.auth import Authenticator, Unauthorized, find_credential
from proxy.config import AuthConfig
from proxy.errors import ConfigError
from tests.support.credentials import KEY, SECRET, future, hs256

# -- where the credential comes from ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "cookies", "query", "found"),
    [
        pytest.param({"Authorization": "Bearer abc"}, {}, {}, "abc", id="bearer"),
        pytest.param({"Authorization": "bearer  abc "}, {}, {}, "abc", id="bearer-any-case"),
        pytest.param({"Authorization": "Basic abc"}, {}, {}, "", id="other-scheme-is-empty"),
        pytest.param({}, {"sid": "c"}, {"token": "q"}, "c", id="cookie-before-query"),
        pytest.param({}, {}, {"token": "q"}, "q", id="query"),
        pytest.param({"Authorization": "Bearer h"}, {"sid": "c"}, {}, "h", id="header-first"),
        pytest.param({}, {}, {}, None, id="none"),
    ],
)
def test_credential_is_taken_from_header_then_cookie_then_query(headers, cookies, query, found):
    auth = AuthConfig(api_keys=[KEY], cookie="sid", query_param="token")
    assert find_credential(auth, headers, cookies, query) == found


def test_a_custom_header_is_read_whole():
    auth = AuthConfig(api_keys=[KEY], header="X-Api-Key")
    assert find_credential(auth, {"X-Api-Key": " abc "}, {}, {}) == "abc"


# -- what is accepted ------------------------------------------------------------------------------


def check(auth: AuthConfig, credential: str | None) -> str | None:
    """None when accepted, else the 401 message."""
    try:
        Authenticator(auth).check(credential)
    except Unauthorized as exc:
        refused = exc
    else:
        return None
    assert (refused.status, refused.code) == (401, "unauthorized")
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    return refused.message


def test_api_keys_accept_any_listed_key_and_nothing_else():
    auth = AuthConfig(api_keys=[KEY, "other-key-9876"], query_param="token")
    assert check(auth, KEY) is None
    assert check(auth, "other-key-9876") is None
    assert check(auth, KEY + "x") == "the credential is not valid"
    assert check(auth, KEY[:-1]) == "the credential is not valid"
    assert check(auth, "") == (
        "this route needs a credential in the Authorization header or the query parameter 'token'"
    )
    assert check(auth, None) is not None


HS = {"algorithms": ["HS256"], "secret": SECRET, "audience": "chat", "issuer": "idp"}


@pytest.mark.parametrize(
    ("mint", "message"),
    [
        pytest.param(
            lambda: hs256({"exp": future(), "aud": "chat", "iss": "idp"}), None, id="valid"
        ),
        pytest.param(
            lambda: hs256({"exp": future(-100), "aud": "chat", "iss": "idp"}),
            "the token has expired",
            id="expired",
        ),
        pytest.param(
            lambda: hs256({"exp": future(-10), "aud": "chat", "iss": "idp"}),
            None,
            id="within-leeway",
        ),
        pytest.param(
            lambda: hs256({"exp": future(), "aud": "other", "iss": "idp"}),
            "the token is not for this audience",
            id="wrong-audience",
        ),
        pytest.param(
            lambda: hs256({"exp": future(), "aud": "chat", "iss": "evil"}),
            "the token is from another issuer",
            id="wrong-issuer",
        ),
        pytest.param(
            lambda: hs256({"aud": "chat", "iss": "idp"}),
            "the token has no 'exp' claim",
            id="no-exp",
        ),
        pytest.param(
            lambda: hs256(
                {"exp": future(), "aud": "chat", "iss": "idp"},
                secret="another-secret-0000000000000000000",
            ),
            "the credential is not valid",
            id="wrong-signature",
        ),
        pytest.param(
            lambda: jwt.encode(
                {"exp": future(), "aud": "chat", "iss": "idp"}, None, algorithm="none"
            ),
            "the credential is not valid",
            id="alg-none",
        ),
        pytest.param(lambda: "not.a.jwt", "the credential is not valid", id="garbage"),
    ],
)
def test_hs256_token_passes_only_when_signed_unexpired_and_for_this_audience_and_issuer(
    mint, message
):
    # Minted when the test runs: a token made at import time ages with the whole run before it.
    assert check(AuthConfig(jwt=HS), mint()) == message


def test_rs256_tokens_verify_with_the_public_key_only():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    auth = AuthConfig(jwt={"algorithms": ["RS256"], "public_key": public_pem, "audience": "chat"})
    good = jwt.encode({"exp": future(), "aud": "chat"}, private, algorithm="RS256")
    assert check(auth, good) is None
    # Algorithm confusion: HMAC over the public key must not pass as a signature.
    forged = jwt.encode({"exp": future(), "aud": "chat"}, SECRET, algorithm="HS256")
    assert check(auth, forged) == "the credential is not valid"


def test_keys_and_jwt_together_accept_either():
    auth = AuthConfig(api_keys=[KEY], jwt={"secret": SECRET})
    assert check(auth, KEY) is None
    assert check(auth, hs256({"exp": future()})) is None
    assert check(auth, "neither-of-them") == "the credential is not valid"


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ("{header: X-Key}", "routes[0].auth: give 'api_keys' or 'jwt' (or both)"),
        ("{api_keys: ['']}", "routes[0].auth: api_keys: each key needs at least 8 characters"),
        ("{api_keys: [abcdefgh], header: null}", "routes[0].auth: give at least one of"),
        ("{jwt: {algorithms: [HS256, RS256], secret: x}}", "routes[0].auth.jwt: algorithms: HS*"),
        ("{jwt: {algorithms: [RS256], secret: x}}", "routes[0].auth.jwt: RS*/ES* algorithms need"),
        ("{jwt: {algorithms: [HS256]}}", "routes[0].auth.jwt: HS* algorithms need 'secret'"),
        ("{jwt: {secret: x, algorithms: [none]}}", "routes[0].auth.jwt.algorithms[0]: Input"),
    ],
)
def test_bad_auth_config_is_one_line_naming_the_key(auth, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"routes: [{{path: /a, upstream: 'http://u/', auth: {auth}}}]")
    assert str(caught.value).startswith(message)


def test_an_unset_key_variable_is_a_config_error_not_an_open_route():
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "routes: [{path: /a, upstream: 'http://u/', auth: {api_keys: ['${CHAT_KEY}']}}]",
            environ={},
        )
    assert "CHAT_KEY is not set" in str(caught.value)
