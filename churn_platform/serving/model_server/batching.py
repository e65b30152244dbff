"""Micro-batching: requests that arrive while the model is busy are scored in one call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from churn_platform.serving.model_server.schema import InputSchema
from churn_platform.serving.model_server.scoring import probabilities

MAX_BATCH_ROWS = 1024
# a lone request of up to this many rows is scored on the event loop: there the hop to the
# worker thread is a noticeable share of its time; a bigger one keeps the thread, so the loop
# can read and check the next requests while the model works
INLINE_MAX_ROWS = 16


class MicroBatcher:
    """Scores concurrent requests together: one ``predict_proba`` call per batch.

    A sklearn pipeline costs about the same for 1 row as for 100 (the per-call overhead of
    the column transformer dominates), so requests that arrive while the model is busy
    are queued and scored in the next call. ``predict`` runs in one worker thread, leaving
    the event loop free to parse and validate the next requests meanwhile. A lone request
    (nothing queued or being scored, no other request reaching the batcher in the same turn
    of the event loop, at most ``INLINE_MAX_ROWS`` rows) is scored at once on the event
    loop: no hop to the worker thread and back (a thread wake-up each way, about 0.1 ms).
    If a batch fails, its requests are scored one by one so only
    the faulty one gets the error.
    """

    def __init__(
        self,
        predict: Callable[[pd.DataFrame], np.ndarray],
        schema: InputSchema,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be >= 1, got {max_batch_rows}")
        self._predict = predict
        self._schema = schema
        self._max_rows = max_batch_rows
        self._queue: asyncio.Queue[tuple[dict[str, list[Any]], int, asyncio.Future[Any]]] = (
            asyncio.Queue()
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self._task: asyncio.Task[None] | None = None
        self._callers = 0  # requests inside ``score``
        self._busy = False  # a batch is being scored in the worker thread
        self.batches = 0  # predict calls made, for tests and curiosity
        self.inline = 0  # of which lone requests scored on the event loop

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the task and the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def score(self, values: dict[str, list[Any]], n_rows: int) -> np.ndarray:
        """Probabilities for one request's checked column values (raises what predict raised)."""
        self._callers += 1
        try:
            if n_rows <= INLINE_MAX_ROWS and self._idle():
                # requests read in the same turn of the loop reach ``score`` first
                await asyncio.sleep(0)
                if self._callers == 1 and self._idle():
                    self.inline += 1
                    (outcome,) = self._score_batch([(values, n_rows, None)])
                    if isinstance(outcome, BaseException):
                        raise outcome
                    return np.asarray(outcome)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.put_nowait((values, n_rows, future))
            return await future
        finally:
            self._callers -= 1

    def _idle(self) -> bool:
        return not self._busy and self._queue.empty()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            rows = batch[0][1]
            while rows < self._max_rows and not self._queue.empty():
                item = self._queue.get_nowait()
                batch.append(item)
                rows += item[1]
            self._busy = True
            try:
                outcomes = await loop.run_in_executor(self._executor, self._score_batch, batch)
            except Exception as exc:  # the batch machinery itself failed
                outcomes = [exc] * len(batch)
            finally:
                self._busy = False
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _score_batch(self, batch: list[tuple[dict[str, list[Any]], int, Any]]) -> list[Any]:
        self.batches += 1
        if len(batch) == 1:
            values = batch[0][0]
        else:
            values = {name: [] for name in batch[0][0]}
            for item_values, _, _ in batch:
                for name, col in item_values.items():
                    values[name].extend(col)
        try:
            scores = self._probabilities(values)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            return [self._score_alone(item[0]) for item in batch]
        out, start = [], 0
        for _, n_rows, _ in batch:
            out.append(scores[start : start + n_rows])
            start += n_rows
        return out

    def _score_alone(self, values: dict[str, list[Any]]) -> Any:
        try:
            return self._probabilities(values)
        except Exception as exc:
            return exc

    def _probabilities(self, values: Mapping[str, list[Any]]) -> np.ndarray:
        return probabilities(self._predict, self._schema, values)
