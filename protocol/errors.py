"""The one error the protocol raises: every bad input becomes a ``FrameError``."""


class FrameError(ValueError):
    """A byte string or frame that is not a valid fieldtrack frame.

    ``code`` is machine-readable (stable, used as a reject reason by the gateway);
    ``reason`` says what was wrong in words; ``field`` names the frame field, if any.
    """

    def __init__(self, code: str, reason: str, field: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.field = field

    def __str__(self) -> str:
        if self.field:
            return "%s: %s (field %s)" % (self.code, self.reason, self.field)
        return "%s: %s" % (self.code, self.reason)


# Codes, one per kind of failure. The gateway counts rejects by these names.
TOO_LARGE = "too_large"
TRUNCATED = "truncated"
TRAILING = "trailing_bytes"
MALFORMED = "malformed_cbor"
TOO_DEEP = "too_deep"
UNSUPPORTED_CBOR = "unsupported_cbor"
DUPLICATE_KEY = "duplicate_key"
NOT_A_FRAME = "not_a_frame"
BAD_VERSION = "unsupported_version"
UNKNOWN_TYPE = "unknown_frame_type"
BAD_FIELD = "bad_field"
BAD_MAC = "bad_mac"
NO_KEY = "no_key"
