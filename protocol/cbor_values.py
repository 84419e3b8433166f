"""CBOR data items that have no Python type of their own: tags and simple values.

The base of the codec: ``cbor`` and the lazily loaded ``cbor_extra`` both import from
here, never from each other.
"""

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated
    pass


class Tag:
    """A tagged data item (major type 6): ``Tag(17, [...])`` is a COSE_Mac0."""

    def __init__(self, tag: int, value: "Any") -> None:
        self.tag = tag
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tag) and other.tag == self.tag and other.value == self.value

    def __repr__(self) -> str:
        return "Tag(%d, %r)" % (self.tag, self.value)


class Simple:
    """A simple value other than false/true/null (``undefined`` is ``Simple(23)``)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Simple) and other.value == self.value

    def __repr__(self) -> str:
        return "Simple(%d)" % self.value


UNDEFINED = Simple(23)
