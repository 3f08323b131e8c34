"""Error types raised when a spec fails to decode or validate."""

from __future__ import annotations

__all__ = ["SpecError", "SpecErrors"]


class SpecError(ValueError):
    """One problem in a spec, located by a dotted field path such as `spec.strategy.canary.steps[0]`."""

    def __init__(self, path: str, message: str, obj: str | None = None) -> None:
        self.path = path
        self.message = message
        self.obj = obj
        super().__init__(path, message, obj)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, message={self.message!r}, obj={self.obj!r})"

    def with_obj(self, obj: str) -> SpecError:
        """Return a copy tagged with the owning object, e.g. `Rollout/my-app`."""
        return SpecError(self.path, self.message, obj)


class SpecErrors(SpecError):
    """Several problems found at once; path/message/obj are the first one's, `str()` lists them all.

    Subclassing SpecError lets callers catch one type and still read `.path` of the first problem.
    """

    def __init__(self, errors: list[SpecError]) -> None:
        if not errors:
            raise ValueError("SpecErrors needs at least one error")
        self.errors = errors
        first = errors[0]
        super().__init__(first.path, first.message, first.obj)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)

    def with_obj(self, obj: str) -> SpecErrors:
        return SpecErrors([e.with_obj(obj) for e in self.errors])
