"""Whole-slide prediction on a ``dask.distributed`` cluster (see :func:`predict_slide`).

With a cluster, :func:`~pixelcam.slide.predict_slide` keeps on the client what needs the
whole slide in order (tissue detection on a thumbnail, seam blending, pyramidal TIFF
writing) and sends the model work to the workers, one task per batch of tiles:

* **The model** travels once per worker: its ``state_dict`` (on the CPU), its
  ``config`` and dtype are scattered with ``broadcast=True`` as one object, and each worker
  thread rebuilds it with :func:`pixelcam.models.build_model` on first use and keeps it
  (one model per worker thread: torch modules with forward hooks are not safe to share
  between threads; run workers with ``--nthreads 1``). Sending the weights rather than a
  checkpoint path works for any model in memory and needs no shared file for it.
* **The tiles**: when the slide is a TIFF/SVS file, each task reads its own tiles from the
  slide's absolute path, so every worker must see the slide at the same path as the client
  (a shared file system); a worker that cannot read it fails with an
  :class:`~pixelcam.errors.InputError` naming the path and the worker. Any other source (an
  array, a list of levels, a PNG/JPEG decoded whole) is read on the client and the tiles
  are scattered with their task.
* **The flow**: at most a few batches are in flight (twice the cluster's threads, capped so
  that their maps stay under ``_IN_FLIGHT_BYTES``); results that come back early wait in a
  small buffer and are blended in row-major order, the order the blender needs. Client
  memory therefore stays flat whatever the slide size.

The workers run the same code as the client: start them from the same environment (the
same pixelcam, torch and dask versions).
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelcam.errors import InputError, PixelCAMError
from pixelcam.slide.engine import Box, read_tiles, run_batch

__all__ = [
    "ADDRESS_SCHEMES",
    "CONNECT_TIMEOUT",
    "DaskRunner",
    "connect_scheduler",
    "is_address",
    "is_client",
    "resolve_client",
]

#: Prefixes of a ``dask.distributed`` scheduler address.
ADDRESS_SCHEMES: tuple[str, ...] = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")

#: Seconds to reach a scheduler (and to find a worker connected to it).
CONNECT_TIMEOUT = 5.0

_IN_FLIGHT_BYTES = 512 * 2**20  # maps of the batches in flight, at most (about)


def is_address(value: Any) -> bool:
    """Whether ``value`` is a string that looks like a ``dask.distributed`` address."""
    return isinstance(value, str) and value.strip().lower().startswith(ADDRESS_SCHEMES)


def is_client(value: Any) -> bool:
    """Whether ``value`` is a ``distributed.Client`` (without importing distributed)."""
    return any(
        cls.__name__ == "Client" and cls.__module__.startswith("distributed")
        for cls in type(value).__mro__
    )


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise InputError(
            "a dask.distributed scheduler needs the 'distributed' package: "
            "pip install 'dask[distributed]'"
        ) from exc
    return distributed


def _probe(address: str, timeout: float) -> None:
    """Open a TCP connection to the scheduler: a refused port fails at once, not after
    ``timeout`` seconds of retries inside ``distributed``."""
    from distributed.comm import parse_address, parse_host_port

    scheme, loc = parse_address(address)
    if scheme not in ("tcp", "tls", "ws", "wss"):
        return
    host, port = parse_host_port(loc, default_port=8786)
    with socket.create_connection((host, port), timeout=timeout):
        pass


def _identity(address: str, timeout: float) -> dict:
    """The ``identity`` of whatever answers at ``address`` (a dask scheduler says
    ``{"type": "Scheduler", ...}``), asked in a thread of its own: the caller may be in a
    running event loop (Jupyter)."""
    import asyncio

    from distributed.core import rpc
    from distributed.security import Security

    async def ask() -> dict:
        args = Security().get_connection_args("client")
        remote = rpc(address, timeout=timeout, connection_args=args)
        try:
            return await asyncio.wait_for(remote.identity(), timeout)
        finally:
            await remote.close_rpc()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelcam-connect") as pool:
        return pool.submit(asyncio.run, ask()).result()


def connect_scheduler(address: str, timeout: float = CONNECT_TIMEOUT) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` with at least one worker.

    Raises :class:`~pixelcam.errors.InputError` (one line, naming the address) when the
    scheduler cannot be reached within ``timeout`` seconds, when what answers there is not
    a dask scheduler (a worker, a dashboard...), or when it has no worker. The caller
    closes the client. The client is not made dask's default scheduler.
    """
    distributed = _import_distributed()
    address = address.strip()
    where = f"the dask.distributed scheduler at {address}"
    try:
        _probe(address, timeout)
    except Exception as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(
            f"cannot connect to {where} within {timeout:g} s: {reason or type(exc).__name__}"
        ) from None
    try:
        kind = _identity(address, timeout).get("type")
    except Exception as exc:
        # Not a dask server (an HTTP port, say): its bytes do not parse as dask messages.
        raise InputError(
            f"cannot connect to {where}: no dask scheduler answered there within "
            f"{timeout:g} s ({type(exc).__name__})"
        ) from None
    if kind != "Scheduler":
        raise InputError(
            f"cannot connect to {where}: a dask {kind or 'server'} answers there, not a scheduler"
        )
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:
        raise InputError(f"cannot connect to {where}: {type(exc).__name__}: {exc}") from None
    try:
        _wait_for_workers(client, address, timeout)
    except BaseException:
        client.close()
        raise
    return client


def _wait_for_workers(client: Any, address: str, timeout: float) -> None:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except Exception:
        raise InputError(
            f"no dask worker is connected to the scheduler at {address} (waited "
            f"{timeout:g} s); start one with: dask worker {address}"
        ) from None


# ----------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _ModelPayload:
    """What a worker needs to rebuild the model (scattered once, as one object)."""

    token: str
    config: dict
    state: dict
    dtype: Any


@dataclass(frozen=True)
class _SlideTiles:
    """Tiles a worker reads itself from a slide file at the client's path."""

    path: str
    level: int
    size: int  # bytes of the client's file: a different file at the same path is an error
    boxes: tuple[tuple[int, int, int, int], ...]


_LOCAL = threading.local()


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:
        return "?"


@functools.lru_cache(maxsize=4)
def _open_level(path: str, level: int, mtime_ns: int, size: int) -> Any:
    from pixelcam.slide.reader import open_slide

    return open_slide(path).levels[level]


def _read_slide_tiles(spec: _SlideTiles) -> np.ndarray:
    try:
        stat = os.stat(spec.path)
        if stat.st_size != spec.size:
            raise InputError(f"it is {stat.st_size} bytes there, {spec.size} on the client")
        arr = _open_level(spec.path, spec.level, stat.st_mtime_ns, stat.st_size)
    except (OSError, InputError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(
            f"dask worker {_worker_name()} cannot read the slide {spec.path} (workers read "
            f"the slide at the client's path): {reason}"
        ) from None
    return read_tiles(arr, list(spec.boxes), "sync")  # no nested use of the cluster


def _worker_model(payload: _ModelPayload, device: str | None) -> Any:
    """The model of ``payload`` on this worker thread, built on first use."""
    cached = getattr(_LOCAL, "model", None)
    if cached is not None and cached[0] == (payload.token, device):
        return cached[1]
    _LOCAL.model = None  # drop the previous run's model before building this one
    from pixelcam.device import resolve_device
    from pixelcam.models import build_model

    model = build_model(**payload.config)
    model.load_state_dict(payload.state)
    model.to(device=resolve_device(device or "auto"), dtype=payload.dtype).eval()
    _LOCAL.model = ((payload.token, device), model)
    return model


def _run_batch(
    payload: _ModelPayload,
    tiles: np.ndarray | _SlideTiles,
    insts: list[Any],
    model_input: int | None,
    device: str | None,
    target: int | None,
) -> tuple[dict[str, np.ndarray], float, float]:
    """One batch on a worker: ``(maps per method, read seconds, model seconds)``."""
    t0 = time.perf_counter()
    if isinstance(tiles, _SlideTiles):
        tiles = _read_slide_tiles(tiles)
    t1 = time.perf_counter()
    model = _worker_model(payload, device)
    maps = run_batch(model, tiles, insts, model_input, next(model.parameters()).device, target)
    return maps, t1 - t0, time.perf_counter() - t1


# ----------------------------------------------------------------------------- client side


def resolve_client(scheduler: Any) -> tuple[Any, bool]:
    """``(client, owned)`` for an address (a new client, closed by the caller) or a
    ``distributed.Client`` (checked for workers)."""
    if is_address(scheduler):
        return connect_scheduler(scheduler), True
    address = getattr(scheduler.scheduler, "address", None) or "the dask.distributed client"
    _wait_for_workers(scheduler, address, CONNECT_TIMEOUT)
    return scheduler, False


def _payload(model: Any) -> _ModelPayload:
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise InputError(
            f"a dask.distributed scheduler needs a pixelcam model (rebuilt on the workers with "
            f"build_model(**model.config)), got {type(model).__name__} without a config"
        )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dtype = next(model.parameters()).dtype
    return _ModelPayload(uuid.uuid4().hex, dict(config), state, dtype)


class DaskRunner:
    """:class:`~pixelcam.slide.engine.TileRunner` on a ``dask.distributed`` cluster: one
    task per batch, a few batches in flight, results in order (see the module docstring).

    Args:
        scheduler: a scheduler address (a client is opened here and closed by
            :meth:`close`; an unreachable one raises :class:`~pixelcam.errors.InputError`)
            or a ``distributed.Client`` (left open).
        model: a pixelcam model (rebuilt on the workers from its ``config`` and weights).
        methods: names or :class:`~pixelcam.cams.base.CAMMethod` instances.
        arr: the level the boxes index, read here and scattered when ``slide_path`` is None.
        slide_path: a slide file the workers read themselves, at this path.
        level: the level of ``slide_path`` the boxes index.
        model_input: side the tiles are resized to (None: their own).
        device: the workers' device (default: CUDA where a worker has it, else its CPU).
        target: the class class-specific maps explain (default: each tile's prediction).
    """

    def __init__(
        self,
        scheduler: Any,
        model: Any,
        methods: Sequence[Any],
        arr: Any,
        *,
        slide_path: Path | None = None,
        level: int = 0,
        model_input: int | None = 224,
        device: Any = None,
        target: int | None = None,
    ) -> None:
        self.client, self._owned = resolve_client(scheduler)
        self.model = model
        self.methods = list(methods)
        self.arr = arr
        self.slide_path = slide_path
        self.level = int(level)
        self.model_input = model_input
        self.device = None if device is None else str(device)
        self.target = target
        self.stats: dict[str, Any] = {
            "model_seconds": 0.0,
            "read_wait_seconds": 0.0,
            "read_seconds": 0.0,
            "scheduler": self.client.scheduler.address,
        }

    def run(self, batches: Sequence[Sequence[Box]]) -> Iterator[dict[str, np.ndarray]]:
        """See :meth:`~pixelcam.slide.engine.TileRunner.run`. Adds ``read_seconds`` (tile
        reads, summed over the tasks; ``model_seconds`` too), ``workers``, ``threads`` and
        ``in_flight`` (most batches submitted at a time) to :attr:`stats`."""
        flow = _Flow(self, batches)
        try:
            yield from flow.results()
        except BaseException:  # an error, or the caller closed the iterator early
            flow.cancel()
            raise
        finally:
            flow.shutdown()

    def close(self) -> None:
        """Close the client opened for an address (a client passed in is left open)."""
        if self._owned:
            self._owned = False
            self.client.close()


def _area(box: Box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


class _Flow:
    """One :meth:`DaskRunner.run`: the tasks in flight and the results not yet yielded."""

    def __init__(self, runner: DaskRunner, batches: Sequence[Sequence[Box]]) -> None:
        from distributed import as_completed

        client = runner.client
        self.runner, self.client, self.batches = runner, client, batches
        self.stats = runner.stats
        nthreads = client.nthreads()
        threads = max(1, sum(nthreads.values()))
        tile_pixels = max((_area(box) for batch in batches for box in batch), default=1)
        most = max(map(len, batches), default=1)
        batch_bytes = max(1, most * tile_pixels * 4 * len(runner.methods))  # float32 maps
        self.window = max(2, min(2 * threads, _IN_FLIGHT_BYTES // batch_bytes))
        self.stats.update(workers=len(nthreads), threads=threads, in_flight=self.window)
        self.run_id = uuid.uuid4().hex[:8]
        path = runner.slide_path
        self.size = path.stat().st_size if path is not None else 0
        self.payload = client.scatter(_payload(runner.model), broadcast=True, hash=False)
        self.futures: dict[Any, int] = {}
        self.scattered: dict[int, Any] = {}
        self.reads: dict[int, Any] = {}  # client-side reads of in-memory sources, ahead
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelcam-tiles")
        self.pending = as_completed(loop=client.loop)

    def results(self) -> Iterator[dict[str, np.ndarray]]:
        """The maps of each batch in order; early results wait in a small buffer."""
        n = len(self.batches)
        submitted = consumed = 0
        while submitted < min(self.window, n):
            self._submit(submitted)
            submitted += 1
        done = iter(self.pending)
        buffer: dict[int, dict[str, np.ndarray]] = {}
        while consumed < n:
            i, maps = self._collect(done)
            buffer[i] = maps
            while consumed in buffer:
                yield buffer.pop(consumed)
                consumed += 1
                if submitted < n:
                    self._submit(submitted)
                    submitted += 1

    def _read_ahead(self, upto: int) -> None:
        for j in range(upto, min(upto + 2, len(self.batches))):
            if j not in self.reads:
                args = (self.runner.arr, self.batches[j], "threads")
                self.reads[j] = self.pool.submit(read_tiles, *args)

    def _submit(self, i: int) -> None:
        r = self.runner
        if r.slide_path is not None:
            data: Any = _SlideTiles(str(r.slide_path), r.level, self.size, tuple(self.batches[i]))
        else:
            self._read_ahead(i)
            t0 = time.perf_counter()
            tiles = self.reads.pop(i).result()
            self.stats["read_seconds"] += time.perf_counter() - t0
            data = self.scattered[i] = self.client.scatter(tiles, hash=False)
        fut = self.client.submit(
            _run_batch, self.payload, data, r.methods, r.model_input, r.device, r.target,
            key=f"pixelcam-batch-{self.run_id}-{i}", pure=False, priority=-i,
        )  # fmt: skip
        self.futures[fut] = i
        self.pending.add(fut)

    def _collect(self, done: Iterator[Any]) -> tuple[int, dict[str, np.ndarray]]:
        """The next finished batch: ``(its index, its maps)``."""
        t0 = time.perf_counter()
        fut = next(done)
        self.stats["read_wait_seconds"] += time.perf_counter() - t0
        i = self.futures.pop(fut)
        try:
            maps, read_s, model_s = fut.result()
        except InputError:
            raise
        except Exception as exc:
            y0, _, x0, _ = self.batches[i][0]
            raise PixelCAMError(
                f"tile batch {i + 1} of {len(self.batches)} (from the tile at y {y0}, x {x0}) "
                f"failed on the dask cluster at {self.stats['scheduler']}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        fut.release()
        if i in self.scattered:
            self.scattered.pop(i).release()
        self.stats["read_seconds"] += read_s
        self.stats["model_seconds"] += model_s
        return i, maps

    def cancel(self) -> None:
        """Cancel the tasks in flight and the tiles scattered for them."""
        self.client.cancel(list(self.futures) + list(self.scattered.values()), force=True)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.payload.release()
