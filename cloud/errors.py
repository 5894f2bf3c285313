"""Domain errors raised by cloud services; the API maps them to HTTP problems."""


class DomainError(Exception):
    status = 400


class NotFound(DomainError):
    status = 404


class Forbidden(DomainError):
    status = 403


class Unauthorized(DomainError):
    status = 401


class Conflict(DomainError):
    status = 409


class Invalid(DomainError):
    """Input that is well-formed but not acceptable (answered 422, as a malformed one)."""

    status = 422


class TooManyAttempts(DomainError):
    """Too many failed logins: this login (or address) is locked for ``retry_after_s``."""

    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Malformed(DomainError):
    """A request whose body cannot be read at all (a notification that is not JSON)."""

    status = 400


class Unavailable(DomainError):
    """A provider outside this system (WeChat Pay) did not answer; try again."""

    status = 503
