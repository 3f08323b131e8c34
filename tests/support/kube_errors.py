"""The API server's failure replies: `Status` bodies with the reason, code and message a real server sends."""

from __future__ import annotations

from typing import Any

from tests.support.kube_resources import ResourceType


class ApiError(Exception):
    """Raised anywhere in the emulator; the router turns it into a `Status` reply."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rt: ResourceType, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}',
        _details(rt, name),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(
    rt: ResourceType, name: str, field: str, cause: str, reason: str = "FieldValueRequired"
) -> ApiError:
    qualified_kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    details = {
        "name": name,
        "kind": rt.kind,
        "causes": [{"reason": reason, "message": cause, "field": field}],
    }
    if rt.group:
        details["group"] = rt.group
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {field}: {cause}', details)


def patch_failed(message: str) -> ApiError:
    """A JSON patch that cannot be applied (failed `test`, missing path): 422 like the real handler."""
    return ApiError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": message}]},
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
        {
            "causes": [
                {
                    "reason": "UnexpectedServerResponse",
                    "message": f"unsupported content type {content_type!r}",
                }
            ]
        },
    )


def resource_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})"
    )


def expired(requested: str, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")
