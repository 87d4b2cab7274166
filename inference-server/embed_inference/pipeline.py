"""The Embed stream: receive -> tokenize -> forward -> normalize/bytes, overlapped.

`async for req in it: yield work(req)` would run one batch at a time. Instead one
task per stage hands jobs on through bounded queues (back-pressure: a client that
stops reading results stops the forward pass, then the reading of its requests),
and each stage runs its work in a thread pool, so batch n+1 is tokenized while
batch n is in the forward pass. Results may leave in any order; an error in one
batch becomes that batch's error result and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from embedmulti.v1 import inference_pb2 as pb

from . import metrics
from .config import Limits
from .encoders.base import Prepared, TokenBatch
from .errors import InvalidArgument, ResourceExhausted, code_number, status_of
from .models import LoadedModel, ModelRegistry

log = logging.getLogger("embed_inference.pipeline")

_END = object()  # passed down the stages after the client half-closes
# Queue depths: enough to keep every stage busy, small enough to bound memory.
_RECEIVED_DEPTH = 4
_STAGE_DEPTH = 2
_RESULTS_DEPTH = 4
# Per-row overhead of an Embeddings message beyond the float data (varint + bool),
# and a margin for the envelope.
_ROW_OVERHEAD_BYTES = 8
_ENVELOPE_BYTES = 256


def pre_workers() -> int:
    """Tokenizing threads: one per core (the Rust tokenizer releases the GIL)."""
    return max(2, os.cpu_count() or 2)


class StagePools:
    """The worker threads, shared by every stream. One forward thread: the device
    runs one batch at a time anyway, and torch parallelizes inside it. Several
    tokenizing threads, each with its own tokenizer copy, so that batches n+1, n+2
    are tokenized while batch n runs."""

    def __init__(self) -> None:
        self.pre = ThreadPoolExecutor(pre_workers(), thread_name_prefix="embed-pre")
        self.forward = ThreadPoolExecutor(1, thread_name_prefix="embed-forward")
        self.post = ThreadPoolExecutor(1, thread_name_prefix="embed-post")

    def shutdown(self) -> None:
        for pool in (self.pre, self.forward, self.post):
            pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Job:
    """One EmbedBatch on its way through the stages."""

    batch_id: int
    model: LoadedModel
    texts: Sequence[str]
    # Set instead of texts when the batch came tokenized.
    tokens: TokenBatch | None = None
    prepared: Prepared | None = None
    output: Any = None

    @staticmethod
    def from_request(batch: pb.EmbedBatch, registry: ModelRegistry, limits: Limits) -> Job:
        """The cheap checks, on the event loop, before any work is queued."""
        model = registry.get(batch.model_key)
        texts = list(batch.texts)
        tokens = None
        if batch.HasField("tokens"):
            if texts:
                raise InvalidArgument("a batch carries texts or tokens, not both")
            tokens = token_batch(batch.tokens, model)
        rows = tokens.rows if tokens is not None else len(texts)
        if rows == 0:
            raise InvalidArgument("the batch has no texts")
        if rows > limits.max_batch_size:
            raise ResourceExhausted(
                f"{rows} texts in one batch exceed max_batch_size {limits.max_batch_size}"
            )
        check_text_lengths(texts, limits)
        reply = rows * (model.info.dim * 4 + _ROW_OVERHEAD_BYTES) + _ENVELOPE_BYTES
        if reply > limits.max_message_bytes:
            raise ResourceExhausted(
                f"the result of {rows} rows of dim {model.info.dim} ({reply} bytes) would exceed "
                f"max_message_bytes {limits.max_message_bytes}"
            )
        return Job(batch.batch_id, model, texts, tokens)

    def to_result(self, data: Any) -> pb.EmbedResult:
        prepared = self.prepared
        assert prepared is not None
        result = pb.EmbedResult(batch_id=self.batch_id)
        # Filled in place: passing a built Embeddings to the EmbedResult constructor
        # costs a slow deep copy (about 25x the cost of the 2 MB bytes copy itself).
        embeddings = result.embeddings
        embeddings.rows = prepared.rows
        embeddings.dim = int(data.shape[1])
        embeddings.data = data.astype("<f4", copy=False).tobytes()
        embeddings.token_counts.extend(prepared.token_counts.tolist())
        embeddings.truncated.extend(prepared.truncated.tolist())
        return result


def check_text_lengths(texts: Sequence[str], limits: Limits) -> None:
    longest = max(map(len, texts), default=0)
    if longest > limits.max_text_chars:
        index = next(i for i, t in enumerate(texts) if len(t) > limits.max_text_chars)
        raise InvalidArgument(
            f"text {index} has {len(texts[index])} characters, over max_text_chars "
            f"{limits.max_text_chars}"
        )


def token_batch(message: pb.TokenIds, model: LoadedModel) -> TokenBatch:
    """Checks ids from a client before they index the embedding table (an id out of
    range would be a device-side assert on CUDA, which ends the process's CUDA use)."""
    encoder = model.encoder
    if not encoder.supports_ids:
        raise InvalidArgument("this model takes texts, not token ids")
    lengths = np.asarray(message.lengths, dtype=np.uint32)
    rows = len(lengths)
    if len(message.truncated) != rows:
        raise InvalidArgument(f"tokens: {len(message.truncated)} truncated flags for {rows} rows")
    if len(message.ids) != 4 * int(lengths.sum(dtype=np.uint64)):
        raise InvalidArgument("tokens: the ids do not add up to the lengths")
    if rows and (lengths.min() == 0 or lengths.max() > model.info.max_length):
        raise InvalidArgument(f"tokens: a row has 0 or more than {model.info.max_length} ids")
    ids = np.frombuffer(message.ids, dtype="<u4")
    if encoder.vocab_size is not None and len(ids) and int(ids.max()) >= encoder.vocab_size:
        raise InvalidArgument(f"tokens: an id is past the vocabulary ({encoder.vocab_size})")
    truncated = np.asarray(message.truncated, dtype=bool)
    return TokenBatch(ids=ids.astype(np.uint32), lengths=lengths, truncated=truncated)


def token_ids_pb(tokens: TokenBatch) -> pb.TokenIds:
    return pb.TokenIds(
        ids=tokens.ids.astype("<u4", copy=False).tobytes(),
        lengths=tokens.lengths.tolist(),
        truncated=tokens.truncated.tolist(),
    )


def error_result(batch_id: int, error: BaseException, model: str = "") -> pb.EmbedResult:
    code, message = status_of(error)
    metrics.batch_failed(model, code.name)
    if code == grpc.StatusCode.INTERNAL:  # a bug, not a refusal: keep the traceback
        log.error("batch %d failed", batch_id, exc_info=error)
    return pb.EmbedResult(
        batch_id=batch_id, error=pb.BatchError(code=code_number(code), message=message)
    )


class EmbedStream:
    def __init__(
        self,
        registry: ModelRegistry,
        limits: Limits,
        pools: StagePools,
    ) -> None:
        self._registry = registry
        self._limits = limits
        self._pools = pools

    async def run(self, requests: AsyncIterator[pb.EmbedBatch]) -> AsyncIterator[pb.EmbedResult]:
        received: asyncio.Queue[Any] = asyncio.Queue(_RECEIVED_DEPTH)
        tokenized: asyncio.Queue[Any] = asyncio.Queue(_STAGE_DEPTH)
        computed: asyncio.Queue[Any] = asyncio.Queue(_STAGE_DEPTH)
        results: asyncio.Queue[Any] = asyncio.Queue(_RESULTS_DEPTH)
        watched = metrics.LIVE.add_queues(
            (
                ("received", received),
                ("tokenized", tokenized),
                ("computed", computed),
                ("results", results),
            )
        )
        tasks = [
            asyncio.create_task(self._receive(requests, received, results)),
            asyncio.create_task(
                self._stage(received, tokenized, results, self._pools.pre, self._pre, pre_workers())
            ),
            asyncio.create_task(
                self._stage(tokenized, computed, results, self._pools.forward, self._forward)
            ),
            asyncio.create_task(
                self._stage(computed, results, results, self._pools.post, self._post)
            ),
        ]
        try:
            while (item := await results.get()) is not _END:
                yield item
        finally:
            # Client cancellation lands here too: no new work starts; a batch already in
            # a thread finishes there and is dropped.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            metrics.LIVE.remove_queues(watched)

    async def _receive(
        self,
        requests: AsyncIterator[pb.EmbedBatch],
        received: asyncio.Queue[Any],
        results: asyncio.Queue[Any],
    ) -> None:
        try:
            async for batch in requests:
                try:
                    job = Job.from_request(batch, self._registry, self._limits)
                except Exception as error:
                    await results.put(error_result(batch.batch_id, error))
                    continue
                await received.put(job)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the request stream broke: answer what was received
            log.warning("the Embed request stream failed: %s", status_of(error)[1])
        await received.put(_END)

    async def _stage(
        self,
        inbox: asyncio.Queue[Any],
        outbox: asyncio.Queue[Any],
        results: asyncio.Queue[Any],
        pool: ThreadPoolExecutor,
        work: Callable[[Job], Any],
        workers: int = 1,
    ) -> None:
        """`workers` jobs at a time (results may pass each other); _END goes on once all
        of them have seen it."""
        loop = asyncio.get_running_loop()

        async def worker() -> None:
            while (job := await inbox.get()) is not _END:
                try:
                    done = await loop.run_in_executor(pool, work, job)
                except Exception as error:
                    await results.put(error_result(job.batch_id, error, job.model.info.model_key))
                    continue
                await outbox.put(done)
            await inbox.put(_END)  # for the sibling workers

        await asyncio.gather(*(worker() for _ in range(workers)))
        await outbox.put(_END)

    def _pre(self, job: Job) -> Job:
        encoder = job.model.encoder
        prepared = encoder.pre_ids(job.tokens) if job.tokens is not None else encoder.pre(job.texts)
        tokens = int(prepared.token_counts.sum())
        budget = self._limits.max_batch_tokens
        if tokens > budget:
            raise ResourceExhausted(f"{tokens} tokens in a batch exceed max_batch_tokens {budget}")
        job.prepared = prepared
        return job

    @staticmethod
    def _forward(job: Job) -> Job:
        assert job.prepared is not None
        started = time.perf_counter()
        job.output = job.model.encoder.forward(job.prepared)
        metrics.forward_seconds(job.model.info.model_key, time.perf_counter() - started)
        return job

    @staticmethod
    def _post(job: Job) -> pb.EmbedResult:
        data = job.model.encoder.post(job.output)
        job.output = None  # frees the device tensor before the bytes are built
        result = job.to_result(data)
        prepared = job.prepared
        assert prepared is not None
        metrics.batch_done(
            job.model.info.model_key, prepared.rows, int(prepared.token_counts.sum())
        )
        return result
