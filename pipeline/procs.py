"""Process start method for worker pools.

Forking a process whose OpenCV thread pool has already run deadlocks the child (the pool's threads
do not exist there, and the first OpenCV call waits for them). So workers start from a forkserver,
a clean process that has imported numpy/cv2/lmdb but run nothing, or by spawn where forkserver is
not available. Scripts that build datasets must then guard their entry point with
`if __name__ == "__main__":`, as with any multiprocessing code.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time

PRELOAD = ("numpy", "cv2", "lmdb", "msgpack")


def worker_context(preload: tuple[str, ...] = ()) -> mp.context.BaseContext:
    """The start method for worker pools; `preload` names the caller's own modules (its worker
    functions), imported once in the forkserver beside the heavy common ones so each worker starts
    warm."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([*PRELOAD, *preload])
        return ctx
    return mp.get_context("spawn")


def watch_parent(pid: int) -> None:
    """Exit when the build process is gone (SIGKILL, OOM killer): a worker from a killed build must
    not go on writing beside the build that resumes it. Workers are children of the forkserver, not
    of the build, so they are not told otherwise."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, daemon=True, name="watch-build").start()


def wait_for_tasks(pool, futures, root, on_result=lambda result: None, on_tick=lambda: None) -> None:
    """Wait for a pool's tasks: each result to `on_result`, `on_tick` twice a second (progress). A
    worker's DepthmaskError re-raises here; a dead worker is one line saying the build resumes; on any
    failure the other tasks are cancelled and the workers stopped, so nothing keeps writing."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    from .errors import DepthmaskError

    pending = set(futures)
    try:
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                on_result(future.result())
            on_tick()
    except BrokenProcessPool:
        raise DepthmaskError(f"{root}: a build worker died unexpectedly (killed, or out of memory?); "
                             "run the same command again to resume") from None
    except BaseException:
        for future in pending:
            future.cancel()
        stop_workers(pool)
        raise


def stop_workers(pool) -> None:
    """Terminate a ProcessPoolExecutor's workers now, running tasks included. shutdown(cancel_futures=True)
    only cancels what has not started, and waits for the rest: a worker would go on writing its shard
    beside the build that resumes it. Python 3.14 has the public terminate_workers(); before it (this
    project runs on 3.11) the only way is the pool's own table of processes, `_processes`."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
