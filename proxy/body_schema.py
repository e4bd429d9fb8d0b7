"""``body.schema``: the JSON Schema a client's body must satisfy, checked with the ``jsonschema``
library (the reference implementation; writing our own validator would be the bug farm).

The schema is checked once, at start-up (a schema that is not valid for its draft is a config
error naming it); each request's body is then checked before any upstream request, and a failure
is ``400`` ``invalid_body`` with the JSON path of the first problem (``$.messages[0].role``), so a
page learns which field to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError, ValidationError

from .errors import BadRequest

__all__ = ["BodySchema"]


class BodySchema:
    __slots__ = ("_validator",)

    def __init__(self, schema: dict[str, Any]) -> None:
        validator_class = jsonschema.validators.validator_for(schema)
        try:
            validator_class.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(part) for part in exc.path) or "(top)"
            raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
        self._validator = validator_class(schema)

    def check(self, body: Mapping[str, Any]) -> None:
        """Raise ``400 invalid_body`` naming the first problem's JSON path."""
        error: ValidationError | None = jsonschema.exceptions.best_match(
            self._validator.iter_errors(body)
        )
        if error is not None:
            raise BadRequest(
                f"the request body does not match the route's schema at {error.json_path}: "
                f"{error.message}",
                code="invalid_body",
            )
