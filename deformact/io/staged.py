"""Stages in threads: decoding overlapped with pose estimation (docs/PERFORMANCE.md, "Long videos
and live sources").

PyAV's decoder and mediapipe's graphs release the GIL, so a frame source and each stage of work
run side by side on separate cores, connected by small queues, while the results come out in
order, exactly as the sequential loop gives them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_END = object()
_POLL_S = 0.1  # how often a blocked thread checks whether the consumer has gone


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def staged(items: Iterable[Any], *stages: Callable[[Any], Any], depth: int = 2) -> Iterator[Any]:
    """``stages`` applied in turn to every item of ``items``, in order.

    The iteration of ``items`` (e.g. a video decoder) runs in a thread of its own and so does
    each stage: stage k works on item i while stage k - 1 works on item i + 1. Queues hold at most
    ``depth`` items between two threads. An exception raised by ``items`` or a stage is raised
    here, after the results of the items before it; closing the returned generator (a ``break``,
    an error, Ctrl-C in the consumer) stops every thread and closes ``items``.
    """
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(max(1, depth)) for _ in range(len(stages) + 1)]

    def put(q: queue.Queue, x: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=_POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def get(q: queue.Queue) -> Any:
        while not stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        return _END

    def source() -> None:
        it = iter(items)
        try:
            for x in it:
                if not put(queues[0], x):
                    break
            else:
                put(queues[0], _END)
        except BaseException as e:  # noqa: BLE001 (handed to the consumer, raised there)
            put(queues[0], _Failed(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's own clean-up (a container's close) runs in its thread

    def work(k: int, fn: Callable[[Any], Any]) -> None:
        while True:
            x = get(queues[k])
            if x is _END or isinstance(x, _Failed):
                put(queues[k + 1], x)
                return
            try:
                y = fn(x)
            except BaseException as e:  # noqa: BLE001
                put(queues[k + 1], _Failed(e))
                return
            if not put(queues[k + 1], y):
                return

    threads = [threading.Thread(target=source, daemon=True, name="staged-source")]
    threads += [threading.Thread(target=work, args=(k, fn), daemon=True, name=f"staged-{k}")
                for k, fn in enumerate(stages)]

    def results() -> Iterator[Any]:
        for t in threads:
            t.start()
        try:
            while True:
                x = queues[-1].get()
                if x is _END:
                    return
                if isinstance(x, _Failed):
                    raise x.error
                yield x
        finally:
            stop.set()
            for t in threads:
                t.join()

    return results()
