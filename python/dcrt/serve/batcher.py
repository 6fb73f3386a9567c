"""Dynamic batching: concurrent requests to one model coalesced into one batched ``infer``.

The runtime's batched kernels cost several times less per sample than batch 1, so a server
that answers many small requests at once should run them together. A :class:`Batcher` takes
requests (each ``[n, *input_shape]``) on an asyncio queue; its loop takes the first waiting
request and every other one already queued (those that arrived while the previous batch ran),
then whatever arrives within ``max_delay`` seconds (0: none), up to ``max_batch`` samples,
runs one ``infer`` on their concatenation in a worker thread (the runtime releases the GIL),
and hands each request back exactly its rows. A request larger than ``max_batch`` runs alone.
If a batch fails (an input the runtime refuses), each of its requests is rerun alone, so an
error reaches only the request that caused it.

``max_batch <= 1`` turns batching off: each request runs its own ``infer`` as it arrives
(up to ``max_queue`` at once), which is the baseline the load test compares against.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class QueueFull(Exception):
    """More than ``max_queue`` requests are waiting: the server answers 503 with Retry-After."""


class Batcher:
    def __init__(self, model, *, max_batch: int = 32, max_delay: float = 0.0, max_queue: int = 256,
                 on_batch=None):
        self.model = model
        self.max_batch, self.max_delay, self.max_queue = int(max_batch), float(max_delay), int(max_queue)
        self.on_batch = on_batch  # called with the batch size (metrics)
        self._q: asyncio.Queue | None = None
        self._task = None
        self._pending = 0  # queued or running, for the queue bound
        self._carry = None
        # One thread runs the batches (the model splits each over its own threads); without
        # batching, requests run side by side on up to max_queue threads.
        self._pool = ThreadPoolExecutor(max_workers=1 if self.max_batch > 1 else min(self.max_queue, 8),
                                        thread_name_prefix="dcrt-infer")

    @property
    def depth(self) -> int:
        return self._pending

    def start(self):
        if self.max_batch > 1 and self._task is None:
            self._q = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self):
        """Finish what is queued, then stop (graceful shutdown)."""
        if self._task is not None:
            while self._pending:
                await asyncio.sleep(0.005)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._pool.shutdown(wait=True)

    async def infer(self, x: np.ndarray) -> np.ndarray:
        """The model's output for ``x`` ([n, *input_shape], float32), batched with others."""
        if self._pending >= self.max_queue:
            raise QueueFull(f"{self._pending} requests are waiting (max_queue={self.max_queue})")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            if self.max_batch <= 1:
                if self.on_batch:
                    self.on_batch(x.shape[0])
                return await loop.run_in_executor(self._pool, self.model.infer, x)
            fut = loop.create_future()
            self._q.put_nowait((x, fut))
            return await fut
        finally:
            self._pending -= 1

    async def _next(self, timeout):
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._q.get()
        if not self._q.empty():
            return self._q.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._q.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            batch, n = [first], first[0].shape[0]
            deadline = time.monotonic() + self.max_delay
            while n < self.max_batch:
                item = await self._next(deadline - time.monotonic())
                if item is None:
                    break
                if n + item[0].shape[0] > self.max_batch:
                    self._carry = item  # first of the next batch
                    break
                batch.append(item)
                n += item[0].shape[0]
            batch = [(x, f) for x, f in batch if not f.cancelled()]  # clients that went away
            if not batch:
                continue
            if self.on_batch:
                self.on_batch(n)
            xs = [x for x, _ in batch]
            try:
                y = await loop.run_in_executor(self._pool, self.model.infer,
                                               xs[0] if len(xs) == 1 else np.concatenate(xs))
            except Exception:
                if len(batch) == 1:
                    self._settle(batch[0][1], exc=_current_exc())
                    continue
                for x, f in batch:  # each alone: the error goes to its own request only
                    try:
                        self._settle(f, await loop.run_in_executor(self._pool, self.model.infer, x))
                    except Exception as e:  # noqa: BLE001 - handed to the request
                        self._settle(f, exc=e)
                continue
            off = 0
            for x, f in batch:
                self._settle(f, y[off:off + x.shape[0]])
                off += x.shape[0]

    @staticmethod
    def _settle(fut, value=None, exc=None):
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


def _current_exc():
    import sys
    return sys.exc_info()[1]
