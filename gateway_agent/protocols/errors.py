"""Errors raised by the protocol codecs.

Every error is a :class:`FrameError` (itself a :class:`ValueError`) carrying a sentence a human
can act on. ``consumed`` tells a stream reader how many bytes of its buffer to drop before it
scans again (0 when the error was raised on a complete, one-shot input).
"""


class FrameError(ValueError):
    """A byte sequence is not a valid frame of the expected protocol."""

    def __init__(self, message: str, *, consumed: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.consumed = consumed


class ChecksumError(FrameError):
    """The checksum (or CRC) in the frame does not match its contents."""

    def __init__(
        self, expected: int, received: int, *, what: str = "checksum", consumed: int = 0
    ) -> None:
        width = 4 if expected > 0xFF or received > 0xFF else 2
        super().__init__(
            f"bad {what}: frame carries {received:0{width}X}, contents sum to {expected:0{width}X}",
            consumed=consumed,
        )
        self.expected = expected
        self.received = received


class LengthError(FrameError):
    """The frame is too short, truncated, or its length field disagrees with its size."""


class MissingEndError(FrameError):
    """The byte where the end marker (0x16) belongs holds something else."""

    def __init__(self, found: int, offset: int, *, consumed: int = 0) -> None:
        super().__init__(
            f"missing end byte: expected 16 at offset {offset}, found {found:02X}",
            consumed=consumed,
        )
        self.found = found
        self.offset = offset


class NoFrameError(FrameError):
    """No start byte (0x68) of a frame was found."""


class DecodeError(FrameError):
    """The frame is well formed but a field in it cannot be decoded (bad BCD, bad date...)."""
