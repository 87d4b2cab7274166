"""What Embed streams may hold: how many are open per server, and how much work each
has taken in and not yet answered.

The pipeline's queues bound each stream's batches in count, not in bytes, and
nothing bounded the number of streams: 40 streams nobody reads held over a gigabyte.
Here a stream is refused past `max_streams`, and a window in front of its pipeline
stops pulling requests once the batches received and not yet answered (their
request bytes plus the bytes their results will take) reach `max_stream_bytes`;
the rest wait in gRPC's flow control, on the client's side. One batch is always
let in, however large (it is already under max_message_bytes), so that a stream
never stalls.

The window also keeps, per batch, when it came in and for which model: the debug
log line of each answered batch reads them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from embedmulti.v1 import inference_pb2 as pb

from .errors import ResourceExhausted
from .models import ModelRegistry

log = logging.getLogger("embed_inference.streams")

DEFAULT_MAX_STREAMS = 32
DEFAULT_MAX_STREAM_BYTES = 32 * 1024 * 1024


@dataclass
class Admitted:
    """A batch let into the pipeline and not yet answered."""

    weight: int
    started: float
    model_key: str
    model_id: str


def batch_weight(batch: pb.EmbedBatch, registry: ModelRegistry) -> tuple[int, str]:
    """The bytes a batch holds while in the pipeline: its request, and the float32 result
    it will become (rows x dim; dim 0 for a model_key the pipeline will refuse)."""
    rows = len(batch.tokens.lengths) if batch.HasField("tokens") else len(batch.texts)
    try:
        info = registry.get(batch.model_key).info
    except Exception:  # the pipeline answers it with the error
        return batch.ByteSize(), ""
    return batch.ByteSize() + rows * info.dim * 4, info.model_id


class StreamWindow:
    """One stream's admitted batches, by batch_id (a client may reuse an id: a list each)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.peak_bytes = 0
        self._admitted: dict[int, list[Admitted]] = {}
        self._freed = asyncio.Event()

    async def admit(
        self, requests: AsyncIterator[pb.EmbedBatch], registry: ModelRegistry
    ) -> AsyncIterator[pb.EmbedBatch]:
        async for batch in requests:
            weight, model_id = batch_weight(batch, registry)
            while self.held_bytes and self.held_bytes + weight > self.max_bytes:
                self._freed.clear()
                await self._freed.wait()
            self.held_bytes += weight
            self.peak_bytes = max(self.peak_bytes, self.held_bytes)
            entry = Admitted(weight, time.monotonic(), batch.model_key, model_id)
            self._admitted.setdefault(batch.batch_id, []).append(entry)
            yield batch

    def answered(self, batch_id: int) -> Admitted | None:
        """Called once the result has been handed to gRPC; frees the batch's bytes."""
        entries = self._admitted.get(batch_id)
        if not entries:
            return None
        entry = entries.pop(0)
        if not entries:
            del self._admitted[batch_id]
        self.held_bytes -= entry.weight
        self._freed.set()
        return entry


class StreamLimits:
    """Per server: the open Embed streams, each with its window."""

    def __init__(
        self,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
    ) -> None:
        self.max_streams = max_streams
        self.max_stream_bytes = max_stream_bytes
        self.windows: set[StreamWindow] = set()

    @contextmanager
    def open(self) -> Iterator[StreamWindow]:
        """Refuses a stream past the limit as RESOURCE_EXHAUSTED (the client keeps the
        server out for a while and goes on with the others)."""
        if len(self.windows) >= self.max_streams:
            raise ResourceExhausted(
                f"{len(self.windows)} Embed streams are open, the most this server takes "
                f"(--max-streams {self.max_streams}); try again later"
            )
        window = StreamWindow(self.max_stream_bytes)
        self.windows.add(window)
        try:
            yield window
        finally:
            self.windows.discard(window)

    @property
    def held_bytes(self) -> int:
        return sum(window.held_bytes for window in self.windows)
