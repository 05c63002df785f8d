"""Scripts that many requests send to one redis-server in the same turn of the event loop go
out as one pipeline: one socket write and one read for all of them.

Each request still costs one round trip to admit and one to settle; under concurrency several
requests share them. In redis-py's asyncio client most of a call's CPU is per write (packing,
the write itself, taking a connection from the pool): measured on 2 CPUs, a script call alone
cost 120 to 140 us, in pipelines of 8 45 to 70 us each. A call waits at most one turn of the
loop for others to join it. Each script keeps its own atomicity (a pipeline is not a
transaction, and none is needed: every script is atomic on its own).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["ScriptBatcher"]


class ScriptBatcher:
    """Sends `run(name, keys, args)` calls of one turn of the loop together; owns the tasks
    that send them (`aclose` waits for them)."""

    def __init__(self, client: Any, scripts: dict[str, Any]):
        self._client = client
        self._scripts = scripts  # name -> redis-py `Script` (registered on `client`)
        self._queue: list[tuple[Any, list[str], list[str], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, name: str, keys: list[str], args: list[str]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((self._scripts[name], keys, args, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Any, list[str], list[str],
                                            asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:  # alone: a plain call (it loads a missing script itself)
                script, keys, args, _ = batch[0]
                replies = [await script(keys=keys, args=args)]
            else:
                replies = await self._pipeline(batch)
            missing = [i for i, reply in enumerate(replies) if _no_script(reply)]
            if missing:  # a server that lost its scripts (restarted): load them, send again
                scripts = {id(batch[i][0]): batch[i][0] for i in missing}
                for script in scripts.values():
                    await self._client.script_load(script.script)
                again = await self._pipeline([batch[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except BaseException as exc:  # the connection failed: every call in it failed
            for *_, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, batch: list[tuple[Any, list[str], list[str],
                                                asyncio.Future[Any]]]) -> list[Any]:
        """Each call's reply or error, in order, from one write (EVALSHA only: a script the
        server lacks answers NoScriptError in its place)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _no_script(reply: Any) -> bool:
    import redis.exceptions

    return isinstance(reply, redis.exceptions.NoScriptError)
