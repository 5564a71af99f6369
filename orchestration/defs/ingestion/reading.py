"""An S3 object's bytes in bounded memory: its body read in chunks (a body that breaks is
resumed from the byte reached), copied to a spool file, gunzipped and UTF-8-decoded
incrementally, and its text cut into parts of whole lines.

Nothing here knows the event contract: :mod:`parsing` turns what this module reads into
decoded objects and routes their lines. Memory: one chunk of the body, one chunk of decoded
text and the part being cut (a batch's worth of text), whatever the size of the object.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import os
import random
import tempfile
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

#: Bytes asked of an object's body per read, and of decoded text per step.
CHUNK_BYTES = 256 * 1024
#: Failures of an object's *body*, once S3 has answered its GET: a connection reset or a
#: stall mid-stream, or fewer bytes than announced. boto3 retries requests, not these.
BODY_READ_ERRORS = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError)
#: Exceptions that make an object's bytes undecodable (corrupt gzip, not UTF-8, bad Parquet):
#: the object is quarantined, the run goes on.
DECODE_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError, pa.ArrowException)


@dataclass(frozen=True)
class BodyRetry:
    """How often an object whose body read fails is fetched again, and the backoff between:
    ``base_seconds`` doubling up to ``max_seconds``, each wait jittered down to half so that
    the fetch threads do not retry in step. A retry resumes from the byte reached."""

    attempts: int = 5
    base_seconds: float = 0.25
    max_seconds: float = 4.0

    def wait(self, attempt: int) -> float:
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


class ObjectReadError(Exception):
    """An object could not be fetched: the network or S3 failed past every retry, or the
    object changed while it was read (the data itself is never the cause: an unreadable
    object is quarantined, not an error)."""


NETWORK_REMEDY = "check the network and the S3 endpoint, then re-run the partitions"


def read_error(
    client, bucket: str, key: str, exc: Exception, how: str, remedy: str = NETWORK_REMEDY
) -> ObjectReadError:
    cause = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
    return ObjectReadError(
        f"cannot read s3://{bucket}/{key} from {client.meta.endpoint_url}: {how} ({cause}); "
        "its hour was not landed (hours landed before it stay, a re-run replaces them): "
        f"{remedy}"
    )


def body_chunks(
    client, bucket: str, key: str, retry: BodyRetry, chunk_bytes: int | None = None
) -> Iterator[bytes]:
    """The object's body, in chunks of at most ``chunk_bytes``, each byte exactly once.

    The GET is retried by boto3 (its retry mode: 503 SlowDown, 500, connections reset before
    an answer). A body that breaks while being read (:data:`BODY_READ_ERRORS`) is asked again
    from the byte reached (``Range: bytes=N-``) and only if it is still the object first read
    (``If-Match`` its ETag), up to ``retry.attempts`` attempts in all; an object rewritten in
    between fails with :class:`ObjectReadError`, as do retries exhausted.
    """
    size = chunk_bytes or CHUNK_BYTES
    offset, etag, total, attempt = 0, None, None, 0
    while total is None or offset < total:
        attempt += 1
        resumed = {"Range": f"bytes={offset}-", "IfMatch": etag} if offset else {}
        try:
            response = client.get_object(Bucket=bucket, Key=key, **resumed)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if offset and code in ("PreconditionFailed", "412"):
                raise read_error(
                    client,
                    bucket,
                    key,
                    exc,
                    f"it changed while being read (ETag {etag} after {offset:,} bytes)",
                    "re-run the partitions once its producer has finished writing it",
                ) from exc
            raise read_error(
                client, bucket, key, exc, "the request failed past boto3's retries"
            ) from exc
        except BotoCoreError as exc:
            raise read_error(
                client, bucket, key, exc, "the request failed past boto3's retries"
            ) from exc
        body = response["Body"]
        if not offset:
            etag, total = response.get("ETag"), int(response.get("ContentLength", 0))
        elif not str(response.get("ContentRange", "")).startswith(f"bytes {offset}-"):
            body.close()
            raise read_error(
                client,
                bucket,
                key,
                ValueError(f"asked for bytes {offset}-, got {response.get('ContentRange')!r}"),
                "the server does not honour ranged GETs",
            )
        try:
            while chunk := body.read(size):
                offset += len(chunk)
                yield chunk
            return
        except BODY_READ_ERRORS as exc:
            if attempt >= retry.attempts:
                raise read_error(
                    client, bucket, key, exc, f"its body broke on all {attempt} attempts"
                ) from exc
            time.sleep(retry.wait(attempt))
        finally:
            body.close()


def read_object(client, bucket: str, key: str, retry: BodyRetry) -> bytes:
    """The object's bytes, whole (for small objects): :func:`body_chunks` joined."""
    out = io.BytesIO()
    for chunk in body_chunks(client, bucket, key, retry):
        out.write(chunk)
    return out.getvalue()


class _ChunkFile(io.RawIOBase):
    """A readable file over an iterator of chunks, copying every chunk to ``tee`` as read."""

    def __init__(self, chunks: Iterable[bytes], tee: IO[bytes] | None = None):
        self._chunks = iter(chunks)
        self._tee = tee
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._buf):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            if self._tee is not None:
                self._tee.write(chunk)
            self._buf = memoryview(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def decompressed(source: BinaryIO, gzipped: bool) -> Iterator[bytes]:
    """The bytes of ``source``, gunzipped if ``gzipped`` (every member of a multi-member
    file, zero padding between members ignored, like :func:`gzip.decompress`), in chunks of
    at most :data:`CHUNK_BYTES`. A corrupt gzip raises as :mod:`gzip` does."""
    reader = gzip.GzipFile(fileobj=source, mode="rb") if gzipped else source
    while chunk := reader.read(CHUNK_BYTES):
        yield chunk


class Utf8Decoder:
    """Incremental UTF-8, a byte-order mark at the start dropped ("utf-8-sig"); an error names
    its position in the whole text, as decoding it whole would."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._head: bytes | None = b""  # the first bytes, until the BOM is judged
        self._fed = 0

    def decode(self, data: bytes, final: bool = False) -> str:
        if self._head is not None:
            self._head += data
            if len(self._head) < len(codecs.BOM_UTF8) and not final:
                return ""
            data, self._head = self._head.removeprefix(codecs.BOM_UTF8), None
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise _shifted(exc, self._fed - pending) from None
        self._fed += len(data)
        return text


def _shifted(exc: UnicodeDecodeError, base: int) -> UnicodeDecodeError:
    """``exc`` with its positions ``base`` bytes further (what ``str(exc)`` says)."""
    start, end = exc.start + base, exc.end + base

    class Shifted(UnicodeDecodeError):
        def __str__(self) -> str:
            if exc.end - exc.start == 1:
                byte = exc.object[exc.start]
                return f"'{exc.encoding}' codec can't decode byte 0x{byte:02x} in position {start}: {exc.reason}"  # noqa: E501
            return f"'{exc.encoding}' codec can't decode bytes in position {start}-{end - 1}: {exc.reason}"  # noqa: E501

    return Shifted(exc.encoding, exc.object, exc.start, exc.end, exc.reason)


def texts(chunks: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 text of byte chunks, in chunks (:class:`Utf8Decoder`)."""
    decoder = Utf8Decoder()
    for chunk in chunks:
        if text := decoder.decode(chunk):
            yield text
    if text := decoder.decode(b"", final=True):
        yield text


# ---------------------------------------------------------------------------------------------
# Spooling: the body read once, at network speed, to a file; decoded from there


@dataclass
class Spooled:
    """An object's bytes as stored, in a spool file (``path``), checked to decode to its end.

    ``kept`` is its decoded bytes when they fit the caller's budget (the spool is then
    deleted), else None and the text is decoded again from the spool, part by part. ``size``
    is its decoded bytes (Parquet: its row groups' uncompressed bytes) and ``lines`` its
    newlines + 1 (Parquet: rows), or ``error`` the decode failure. The spool is a closed file
    until read (an hour of thousands of spooled objects holds no file descriptors), deleted
    once read, or when this is garbage-collected.
    """

    kind: str  # "gzip", "text" or "parquet"
    path: str | None
    size: int = 0
    lines: int = 0
    kept: bytes | None = None
    error: Exception | None = None

    def __post_init__(self) -> None:
        self._delete = weakref.finalize(self, _unlink, self.path) if self.path else None

    def chunks(self) -> Iterator[bytes]:
        """The decoded bytes again, from the spool (then deleted)."""
        try:
            with open(self.path, "rb") as file:
                yield from decompressed(file, self.kind == "gzip")
        finally:
            self.close()

    def batches(self, rows: int) -> Iterator[pa.RecordBatch]:
        """Parquet: the rows again, at most ``rows`` per batch, one row group at a time."""
        try:
            with open(self.path, "rb") as file:
                yield from pq.ParquetFile(file).iter_batches(batch_size=rows)
        finally:
            self.close()

    def close(self) -> None:
        if self._delete is not None:
            self._delete()
        self.path = None


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def spool_object(
    client, bucket: str, key: str, kind: str, retry: BodyRetry, keep_bytes: int
) -> Spooled:
    """Read an object to a spool file (in ``$TMPDIR``) and decode it to its end as it arrives
    (Parquet: once arrived), so that an object that does not decode is known before any of its
    lines is routed; its decoded bytes are kept if they come to at most ``keep_bytes``. A
    network failure raises :class:`ObjectReadError` (and deletes the spool)."""
    fd, path = tempfile.mkstemp(prefix="tokenbill-spool-")
    out = Spooled(kind, path)
    with os.fdopen(fd, "w+b") as spool:
        source = _ChunkFile(body_chunks(client, bucket, key, retry), tee=spool)
        try:
            if kind == "parquet":
                while source.read(CHUNK_BYTES):
                    pass
                spool.flush()
                parquet = pq.ParquetFile(spool)
                meta = parquet.metadata
                out.lines = meta.num_rows
                groups = range(meta.num_row_groups)
                out.size = sum(meta.row_group(i).total_byte_size for i in groups)
                for _ in parquet.iter_batches(batch_size=64 * 1024):
                    pass  # every row group decodes
            else:
                kept: list[bytes] | None = []
                decoder = Utf8Decoder()
                for chunk in decompressed(source, kind == "gzip"):
                    out.size += len(chunk)
                    out.lines += chunk.count(b"\n")
                    decoder.decode(chunk)  # checked as it comes (ASCII decodes at memory speed)
                    if kept is not None and out.size <= keep_bytes:
                        kept.append(chunk)
                    else:
                        kept = None  # over the budget: decoded again from the spool, in parts
                decoder.decode(b"", final=True)
                out.lines += 1
                if kept is not None:
                    out.kept = b"".join(kept)
        except DECODE_ERRORS as exc:
            out.error = exc
        except BaseException:
            out.close()
            raise
    if out.error is not None or out.kept is not None:
        out.close()
    return out


# ---------------------------------------------------------------------------------------------
# Text -> parts of whole lines


def cut_lines(
    chunks: Iterable[str], max_lines: int, max_bytes: int
) -> Iterator[tuple[int | None, str]]:
    """(lines before, part) of a text given in chunks: parts of whole lines, at most
    ``max_lines`` lines and about ``max_bytes`` characters each (a longer line is a part of
    its own), without their final newline. A text that is one part is yielded as it is, with
    ``None``: split like a whole object (one final newline ends its last line).

    Text is joined only once a part's worth is held, so memory is about one part and one
    chunk, whatever the length of the text."""
    held: list[str] = []
    chars = newlines = offset = 0
    need_chars = max_bytes
    cut = False
    for chunk in chunks:
        held.append(chunk)
        chars += len(chunk)
        newlines += chunk.count("\n")
        if chars < need_chars and newlines < max_lines:
            continue
        text, pos = "".join(held), 0
        held.clear()
        while (end := _part_end(text, pos, max_lines, max_bytes, final=False)) is not None:
            if end == len(text) and not cut:
                break  # it may be the whole text: judged at its end (a lone "\n" is no line)
            part = text[pos : end - 1] if text[end - 1] == "\n" else text[pos:end]
            yield offset, part
            offset += part.count("\n") + 1
            cut, pos = True, end
        rest = text[pos:]
        del text
        held = [rest] if rest else []
        chars, newlines = len(rest), rest.count("\n")
        # A part not complete yet (a line longer than max_bytes): wait for twice as much.
        need_chars = max(max_bytes, 2 * chars)
    text, pos = "".join(held), 0
    held.clear()
    if not cut and _part_end(text, 0, max_lines, max_bytes, final=True) == len(text):
        yield None, text
        return
    while pos < len(text):
        end = _part_end(text, pos, max_lines, max_bytes, final=True)
        part = text[pos : end - 1] if text[end - 1] == "\n" else text[pos:end]
        yield offset, part
        offset += part.count("\n") + 1
        pos = end


def _part_end(s: str, pos: int, max_lines: int, max_bytes: int, final: bool) -> int | None:
    """End (after its newline) of the part of ``s`` starting at ``pos``, or None if ``s``
    does not hold all of it yet."""
    window = min(len(s), pos + max_bytes)
    full = len(s) - pos >= max_bytes
    nl = s.rfind("\n", pos, window)
    if nl >= 0 and s.count("\n", pos, nl + 1) >= max_lines:
        end = pos
        for _ in range(max_lines):
            end = s.index("\n", end) + 1
        return end
    if full:
        if nl >= 0:
            return nl + 1
        long = s.find("\n", window)
        if long >= 0:
            return long + 1
        return len(s) if final else None
    return len(s) if final else None
