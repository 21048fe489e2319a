"""Input formats of `mupctl data prepare`, read as a stream of bounded pieces.

| suffix | documents |
| --- | --- |
| `.jsonl`, `.jsonl.gz` | one JSON object per line, its `text_field` string (blank lines skipped) |
| `.parquet` | the `text_field` column (pyarrow, the optional extra `parquet`) |
| anything else | the file itself, UTF-8 text (one document) |

`read_pieces(path, file)` yields `Piece`s of about `PIECE_BYTES` of input each, so memory does not
grow with a file: JSONL is cut after a newline, Parquet by row batches, and text after a newline that
has a non-space byte on both sides (where a GPT-2-style pre-tokenizer splits anyway, so a byte-level
BPE gives the same tokens as on the whole file; the byte tokenizer always does). `documents(piece,
text_field)` parses a piece into its texts; it runs in the tokenizing workers. The cut points depend
on the input only, never on the number of workers.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mupctl.errors import UserError

PIECE_BYTES = 1 << 20
MAX_TEXT_PIECE = 16 * PIECE_BYTES  # text with no safe cut point is cut at a UTF-8 boundary past this
SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")  # what a directory contributes
_SAFE_CUT = re.compile(rb"\S\n(?=\S)")
PARQUET_ROWS = 1024


class InputError(Exception):
    """A problem in an input's content, found while reading it: (field, message) for a `UserError`."""

    def __init__(self, field: str, message: str):
        super().__init__(field, message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class Piece:
    file: int       # index of the input file
    path: str
    kind: str       # "text" | "jsonl" | "rows"
    data: object    # bytes (text, jsonl) or a list of column values (rows)
    start: int      # byte offset (text), first line number (jsonl), first row (rows)
    size: int       # input bytes this piece stands for (progress)


def kind_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".gz"):
        raise UserError(f"{path}: of compressed inputs only .jsonl.gz is read; decompress it", "INPUT")
    return "text"


def input_files(inputs: list, text_field: str) -> list[Path]:
    """Files given, and every file with a SUFFIXES name below each directory given (sorted by path).
    Parquet files are opened and their `text_field` column checked here, before any work."""
    if not inputs:
        raise UserError("no input files given", "INPUT")
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
            if not found:
                raise UserError(f"no {', '.join(SUFFIXES)} files under directory {item}", "INPUT")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise UserError(f"no such file or directory: {item}", "INPUT")
    for f in files:
        if kind_of(f) == "parquet":
            parquet_column(f, text_field)
    return files


def parquet_column(path: Path, text_field: str | None):
    """The open `pyarrow.parquet.ParquetFile`; with `text_field`, it must be a string column."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path} is Parquet, which needs pyarrow: pip install 'mupctl[parquet]'", "INPUT") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise UserError(f"{path} is not a readable Parquet file ({type(err).__name__}: {err})", "INPUT") from None
    if text_field is not None:
        import pyarrow as pa
        schema = pf.schema_arrow
        if text_field not in schema.names:
            raise UserError(f"{path} has no column {text_field!r} (columns: {', '.join(schema.names[:20])})",
                            "--text-field")
        kind = schema.field(text_field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise UserError(f"{path}: column {text_field!r} is {kind}, not a string column", "--text-field")
    return pf


def read_pieces(path: Path, file: int, text_field: str) -> Iterator[Piece]:
    """The pieces of one input file, in order."""
    kind = kind_of(path)
    if kind == "parquet":
        yield from _parquet_pieces(path, file, text_field)
        return
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.name.lower().endswith(".gz") else raw
        try:
            yield from _byte_pieces(path, file, kind, stream, raw)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise UserError(f"{path} is not a valid gzip file ({err})", "INPUT") from None


def _byte_pieces(path: Path, file: int, kind: str, stream, raw) -> Iterator[Piece]:
    carry, offset, line, consumed = b"", 0, 1, 0
    while True:
        block = stream.read(PIECE_BYTES)
        buf = carry + block
        if not block:  # end of file: the rest, whatever it ends with
            if buf:
                yield Piece(file, str(path), kind, buf, offset if kind == "text" else line, raw.tell() - consumed)
            return
        cut = _cut(buf, kind)
        if cut <= 0:
            carry = buf
            continue
        piece, carry = buf[:cut], buf[cut:]
        pos = raw.tell()
        yield Piece(file, str(path), kind, piece, offset if kind == "text" else line, pos - consumed)
        consumed = pos
        offset += len(piece)
        line += piece.count(b"\n")


def _cut(buf: bytes, kind: str) -> int:
    """Where to end a piece of `buf` (0: read more first)."""
    if kind == "jsonl":
        return buf.rfind(b"\n") + 1
    for window in (1 << 16, len(buf)):
        last = None
        for last in _SAFE_CUT.finditer(buf, max(0, len(buf) - window)):
            pass
        if last is not None:
            return last.end()
    if len(buf) < MAX_TEXT_PIECE:
        return 0
    cut = len(buf) - 1  # no safe point at all: cut before the last character's first byte
    while cut > len(buf) - 4 and buf[cut] & 0xC0 == 0x80:  # 0b10xxxxxx continues a character
        cut -= 1
    return cut


def _parquet_pieces(path: Path, file: int, text_field: str) -> Iterator[Piece]:
    pf = parquet_column(path, text_field)
    rows, size, done = max(1, pf.metadata.num_rows), path.stat().st_size, 0
    for batch in pf.iter_batches(batch_size=PARQUET_ROWS, columns=[text_field]):
        values = batch.column(0).to_pylist()
        share = size * (done + len(values)) // rows - size * done // rows
        yield Piece(file, str(path), "rows", values, done, share)
        done += len(values)


def documents(piece: Piece, text_field: str) -> Iterator[str]:
    """The texts of a piece; an `InputError` for content that is not what its format promises."""
    if piece.kind == "text":
        try:
            yield piece.data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError("INPUT", f"{piece.path} is not UTF-8 text ({err.reason} at byte "
                                      f"{piece.start + err.start})") from None
    elif piece.kind == "jsonl":
        for n, line in enumerate(piece.data.split(b"\n"), piece.start):
            if line.strip():
                yield _record_text(line, text_field, f"{piece.path}:{n}")
    else:
        for n, value in enumerate(piece.data, piece.start):
            if not isinstance(value, str):
                raise InputError("--text-field", f"{piece.path}: row {n} has {value!r} in column {text_field!r}, "
                                                 "not a string")
            yield value


def _record_text(line: bytes, text_field: str, where: str) -> str:
    try:
        record = json.loads(line)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise InputError("INPUT", f"{where}: not a JSON line ({err})") from None
    if not isinstance(record, dict):
        raise InputError("INPUT", f"{where}: a JSON {type(record).__name__}, not an object")
    text = record.get(text_field)
    if not isinstance(text, str):
        what = "has no field" if text_field not in record else f"has {type(text).__name__} in field"
        raise InputError("--text-field", f"{where}: the record {what} {text_field!r}, not a string "
                                         f"(fields: {', '.join(list(record)[:20])})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # JSON's \ud800 escapes decode to lone surrogates, which no tokenizer takes
        raise InputError("INPUT", f"{where}: field {text_field!r} holds a lone surrogate {text[err.start]!r} at "
                                  f"character {err.start}, not Unicode text; fix the record") from None
    return text
