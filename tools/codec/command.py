"""``fieldtrack decode`` and ``fieldtrack encode``: frames for debugging by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fieldtrack.protocol.errors import FrameError
from fieldtrack.tools.codec import frame_io
from fieldtrack.tools.errors import FieldtrackError


class CodecError(FieldtrackError):
    """Input that cannot be decoded or encoded: bad bytes, JSON, key or frame."""


def _read(source: str | None) -> bytes:
    if source is None or source == "-":
        return sys.stdin.buffer.read()
    path = Path(source)
    if path.is_file():
        return path.read_bytes()
    return source.encode()


def _key(hex_key: str | None) -> bytes | None:
    if hex_key is None:
        return None
    try:
        key = bytes.fromhex(hex_key)
    except ValueError:
        raise CodecError("--key: expected the device key as hex digits") from None
    if not key:
        raise CodecError("--key: the key is empty")
    return key


@click.command("decode")
@click.argument("data", required=False)
@click.option("--form", type=click.Choice(["auto", "hex", "base64", "raw"]), default="auto",
              help="How DATA is spelt; auto tells hex from base64 and reads files as raw bytes.")
@click.option("--key", "hex_key", metavar="HEX", help="Device key, to check a signed frame.")
def decode(data: str | None, form: str, hex_key: str | None) -> None:
    """Decode a frame: DATA is hex, base64, a file, or - / nothing for stdin."""
    raw = _read(data)
    is_file = data not in (None, "-") and Path(str(data)).is_file()
    try:
        if form == "raw" or (form == "auto" and (is_file or data in (None, "-"))
                             and not _looks_textual(raw)):
            payload = raw
        else:
            payload = frame_io.parse_bytes(raw.decode("ascii", "replace"), form)
        out = frame_io.describe(payload, _key(hex_key))
    except frame_io.InputError as exc:
        raise CodecError("input: %s" % exc) from None
    except FrameError as exc:
        raise CodecError("not a valid frame: %s" % exc) from None
    click.echo(json.dumps(out, indent=2))


def _looks_textual(raw: bytes) -> bool:
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return False
    return bool(text) and all(c.isalnum() or c in "+/=\n\r\t x" for c in text)


@click.command("encode")
@click.argument("source", required=False)
@click.option("--key", "hex_key", metavar="HEX", help="Sign with this device key (COSE_Mac0).")
@click.option("--kid", metavar="DEVICE_ID", help="The device id to sign as.")
@click.option("--binary", is_flag=True, help="Write raw bytes instead of hex.")
def encode(source: str | None, hex_key: str | None, kid: str | None, binary: bool) -> None:
    """Encode a frame given as JSON (SOURCE: a file, inline JSON, or - / nothing for stdin)."""
    if source in (None, "-"):
        name = "stdin"
    else:
        name = str(source) if Path(str(source)).is_file() else "the JSON argument"
    text = _read(source).decode("utf-8", "replace")
    try:
        frame = frame_io.load_json(text, name)
        data = frame_io.build(frame, _key(hex_key), kid)
    except frame_io.InputError as exc:
        raise CodecError(str(exc)) from None
    except FrameError as exc:
        raise CodecError("%s: %s" % (name, exc)) from None
    if binary:
        sys.stdout.buffer.write(data)
    else:
        click.echo(data.hex())
