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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelcam.errors import InputError, PixelCAMError

__all__ = ["ADDRESS_SCHEMES", "CONNECT_TIMEOUT", "connect_scheduler", "is_address"]

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
    from pixelcam.slide.reader import open_pyramid

    return open_pyramid(path)[level]


def _read_slide_tiles(spec: _SlideTiles) -> np.ndarray:
    from pixelcam.slide.predict import _read_tiles

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
    return _read_tiles(arr, list(spec.boxes), "sync")  # no nested use of the cluster


def _worker_model(payload: _ModelPayload, device: str | None) -> Any:
    """The model of ``payload`` on this worker thread, built on first use."""
    cached = getattr(_LOCAL, "model", None)
    if cached is not None and cached[0] == (payload.token, device):
        return cached[1]
    _LOCAL.model = None  # drop the previous run's model before building this one
    from pixelcam.models import build_model
    from pixelcam.train.loop import resolve_device

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
    from pixelcam.slide.predict import _run_model

    t0 = time.perf_counter()
    if isinstance(tiles, _SlideTiles):
        tiles = _read_slide_tiles(tiles)
    t1 = time.perf_counter()
    model = _worker_model(payload, device)
    maps = _run_model(model, tiles, insts, model_input, next(model.parameters()).device, target)
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


def run_batches(
    client: Any,
    model: Any,
    insts: list[Any],
    arr: Any,
    slide_path: Path | None,
    level: int,
    batches: Sequence[list[tuple[int, int]]],
    boxes: Callable[[list[tuple[int, int]]], list[tuple[int, int, int, int]]],
    consume: Callable[[list[tuple[int, int]], dict[str, np.ndarray]], None],
    *,
    model_input: int | None,
    device: Any,
    target: int | None,
    tile_pixels: int,
) -> dict[str, Any]:
    """Run ``batches`` on the cluster of ``client``, handing each batch's maps to
    ``consume`` in order. Returns timings and the cluster's size."""
    from distributed import as_completed

    from pixelcam.slide.predict import _read_tiles

    nthreads = client.nthreads()
    address = client.scheduler.address
    threads = max(1, sum(nthreads.values()))
    batch_bytes = max(1, max(map(len, batches), default=1) * tile_pixels * 4 * len(insts))
    window = max(2, min(2 * threads, _IN_FLIGHT_BYTES // batch_bytes))
    device = None if device is None else str(device)
    run = uuid.uuid4().hex[:8]
    stats = {"model_seconds": 0.0, "read_seconds": 0.0, "wait_seconds": 0.0}
    size = slide_path.stat().st_size if slide_path is not None else 0

    payload = client.scatter(_payload(model), broadcast=True, hash=False)
    futures: dict[Any, int] = {}
    scattered: dict[int, Any] = {}
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelcam-tiles")
    reads: dict[int, Any] = {}  # client-side reads of in-memory sources, ahead of submission

    def read_ahead(upto: int) -> None:
        if slide_path is not None:
            return
        for j in range(upto, min(upto + 2, len(batches))):
            if j not in reads:
                reads[j] = pool.submit(_read_tiles, arr, boxes(batches[j]), "threads")

    def submit(i: int) -> None:
        if slide_path is not None:
            data = _SlideTiles(str(slide_path), level, size, tuple(boxes(batches[i])))
        else:
            read_ahead(i)
            t0 = time.perf_counter()
            tiles = reads.pop(i).result()
            stats["read_seconds"] += time.perf_counter() - t0
            data = scattered[i] = client.scatter(tiles, hash=False)
        fut = client.submit(
            _run_batch, payload, data, insts, model_input, device, target,
            key=f"pixelcam-batch-{run}-{i}", pure=False, priority=-i,
        )  # fmt: skip
        futures[fut] = i
        pending.add(fut)

    pending = as_completed(loop=client.loop)
    buffer: dict[int, dict[str, np.ndarray]] = {}
    submitted = consumed = 0
    try:
        while submitted < min(window, len(batches)):
            submit(submitted)
            submitted += 1
        done = iter(pending)
        while consumed < len(batches):
            t0 = time.perf_counter()
            fut = next(done)
            stats["wait_seconds"] += time.perf_counter() - t0
            i = futures.pop(fut)
            try:
                maps, read_s, model_s = fut.result()
            except InputError:
                raise
            except Exception as exc:
                r, c = batches[i][0]
                raise PixelCAMError(
                    f"tile batch {i + 1} of {len(batches)} (from tile row {r}, column {c}) "
                    f"failed on the dask cluster at {address}: {type(exc).__name__}: {exc}"
                ) from exc
            fut.release()
            if i in scattered:
                scattered.pop(i).release()
            stats["read_seconds"] += read_s
            stats["model_seconds"] += model_s
            buffer[i] = maps  # early results wait here: the blender takes rows in order
            while consumed in buffer:
                consume(batches[consumed], buffer.pop(consumed))
                consumed += 1
                if submitted < len(batches):
                    submit(submitted)
                    submitted += 1
    except BaseException:
        client.cancel(list(futures) + list(scattered.values()), force=True)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        payload.release()
    return {
        **stats,
        "address": address,
        "workers": len(nthreads),
        "threads": threads,
        "in_flight": window,
    }
