"""Bus drivers. Each distinguishes timeout, device exception (with code) and decode error."""


class DriverError(Exception):
    """Base of bus driver errors."""


class DeviceTimeout(DriverError):
    """The device did not answer in time."""


class DeviceException(DriverError):
    """The device answered with an exception / error reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class DecodeFailure(DriverError):
    """The device answered something that cannot be decoded as its profile says."""
