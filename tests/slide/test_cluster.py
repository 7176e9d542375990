"""Whole-slide prediction on a dask.distributed cluster.

The cluster is ``LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
protocol="tcp://")``: the workers are threads of the test process, so nothing has to start
a Python process and import torch (seconds each on 2 busy cores), yet every message goes
through a TCP socket, so the model payload, the tasks and the maps are serialised exactly
as for remote workers.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

distributed = pytest.importorskip("distributed")

from pixelcam.cams.base import CAMMethod  # noqa: E402
from pixelcam.data.synthetic import generate_tile  # noqa: E402
from pixelcam.errors import InputError, PixelCAMError  # noqa: E402
from pixelcam.models import build_model  # noqa: E402
from pixelcam.slide import open_pyramid, predict_slide, write_pyramid  # noqa: E402
from pixelcam.slide.cluster import _read_slide_tiles, _SlideTiles, connect_scheduler  # noqa: E402

SIZE = 512
KW = {"tile": 128, "overlap": 16, "model_input": 64, "batch_size": 3}
METHODS = ("pixelcam", "cam")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model("test_resnet", pixel_head="linear").eval()
    with torch.no_grad():  # spread the pixel maps over [0, 1]: differences would show
        model.pixel_head.conv.weight.mul_(60.0)
        model.pixel_head.conv.bias.zero_()
    return model


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """White glass with an elliptic H&E blob: some tiles are background."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(243, 3, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.indices((SIZE, SIZE))
    blob = ((yy - 200) / 150.0) ** 2 + ((xx - 260) / 190.0) ** 2 < 1.0
    tissue, _ = generate_tile(1, (SIZE, SIZE), seed=5)
    image[blob] = tissue[blob]
    return image


@pytest.fixture(scope="module")
def slide(image, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wsi") / "slide.tif"
    write_pyramid(path, image, tile=128)  # lossless: level 0 is ``image``
    return path


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://",
        dashboard_address=":0",
    ) as cluster:  # fmt: skip
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="module")
def reference(model, slide, tmp_path_factory):
    """The local ("threads") maps of the slide and the summary."""
    calls = []
    out = tmp_path_factory.mktemp("threads") / "ref.tif"
    summary = predict_slide(model, slide, out, METHODS, progress=lambda *a: calls.append(a), **KW)
    maps = {m: open_pyramid(p)[0].compute() for m, p in summary["outputs"].items()}
    return summary, maps, calls


def _maps(summary) -> dict[str, np.ndarray]:
    return {m: open_pyramid(p)[0].compute() for m, p in summary["outputs"].items()}


def _same_as_reference(summary, reference) -> None:
    ref_summary, ref_maps, _ = reference
    for key in ("tiles_total", "tiles_processed", "tiles_skipped", "shape", "level"):
        assert summary[key] == ref_summary[key], key
    maps = _maps(summary)
    assert set(maps) == set(ref_maps) == set(METHODS)
    for m in METHODS:
        assert maps[m].shape == (SIZE, SIZE)
        np.testing.assert_allclose(maps[m], ref_maps[m], atol=1e-5)
    assert ref_maps["pixelcam"].std() > 0.1  # there was something to get wrong


def test_cluster_maps_equal_the_local_ones(model, slide, client, reference, tmp_path):
    ref_summary, _, ref_calls = reference
    assert ref_summary["scheduler"] == "threads"
    assert 0 < ref_summary["tiles_skipped"] < ref_summary["tiles_total"] == 25
    calls = []
    summary = predict_slide(
        model, slide, tmp_path / "c.tif", METHODS, scheduler=client,
        progress=lambda *a: calls.append(a), **KW,
    )  # fmt: skip
    _same_as_reference(summary, reference)
    assert calls == ref_calls  # same batches, in the same order
    assert summary["scheduler"] == client.scheduler.address
    assert summary["workers"] == 2 and summary["threads"] == 2 and summary["in_flight"] == 4
    assert summary["model_seconds"] > 0 and summary["read_seconds"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c_cam.tif", "c_pixelcam.tif"]
    for _ in range(50):  # the model payload and every result are released
        if not any(client.has_what().values()):
            break
        time.sleep(0.05)
    assert not any(client.has_what().values())


def test_an_address_and_an_array_source(model, image, cluster, reference, tmp_path):
    # An in-memory source: the client reads the tiles and scatters them with the tasks.
    summary = predict_slide(
        model, image, tmp_path / "a.tif", METHODS, scheduler=cluster.scheduler_address, **KW
    )
    _same_as_reference(summary, reference)
    assert summary["scheduler"] == cluster.scheduler_address


def test_batches_in_flight_are_bounded_and_the_model_built_once_per_worker_thread(
    model, slide, client, tmp_path, monkeypatch
):
    import pixelcam.models

    builds = []
    real_build = pixelcam.models.build_model

    def counting_build(**config):
        builds.append(config)
        return real_build(**config)

    monkeypatch.setattr(pixelcam.models, "build_model", counting_build)
    consumed = [0]
    in_flight = []
    real_submit = client.submit

    def spy(*args, **kwargs):
        in_flight.append(len(in_flight) + 1 - consumed[0])
        return real_submit(*args, **kwargs)

    monkeypatch.setattr(client, "submit", spy)
    summary = predict_slide(
        model, slide, tmp_path / "f.tif", ("pixelcam",), scheduler=client,
        progress=lambda done, total: consumed.__setitem__(0, done),
        **{**KW, "batch_size": 1},
    )  # fmt: skip
    assert len(in_flight) == summary["tiles_processed"] > 8  # one task per tile
    assert max(in_flight) == summary["in_flight"] == 4
    assert 1 <= len(builds) <= 2  # two worker threads, many batches


def test_an_unreachable_address_fails_at_once(model, slide, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    start = time.perf_counter()
    with pytest.raises(InputError, match=f"cannot connect to the dask.distributed .* {address}"):
        predict_slide(model, slide, tmp_path / "x.tif", scheduler=address)
    assert time.perf_counter() - start < 3.0
    with pytest.raises(InputError, match="scheduler must be one of threads, sync, a dask"):
        predict_slide(model, slide, tmp_path / "x.tif", scheduler="processes")
    assert list(tmp_path.iterdir()) == []


def test_a_scheduler_without_workers():
    empty = distributed.LocalCluster(
        n_workers=0, processes=False, protocol="tcp://", dashboard_address=":0"
    )
    try:
        with pytest.raises(InputError, match="no dask worker is connected"):
            connect_scheduler(empty.scheduler_address, timeout=0.3)
    finally:
        empty.close()


class _Boom(CAMMethod):
    name = "boom"
    class_specific = False

    def raw(self, model, output, target):
        raise RuntimeError("boom on purpose")


def test_a_worker_error_surfaces_and_leaves_no_tiff(model, slide, client, tmp_path):
    with pytest.raises(PixelCAMError, match="failed on the dask cluster.*boom on purpose"):
        predict_slide(model, slide, tmp_path / "e.tif", ["pixelcam", _Boom()], scheduler=client)
    assert list(tmp_path.iterdir()) == []  # no map, no .part file


def test_a_worker_that_cannot_read_the_slide(model, slide, client, tmp_path, monkeypatch):
    import pixelcam.slide.cluster as cluster

    def missing(*args):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(cluster, "_open_level", missing)  # the workers are threads here
    with pytest.raises(InputError, match=f"dask worker tcp://.* cannot read the slide {slide}"):
        predict_slide(model, slide, tmp_path / "w.tif", scheduler=client, **KW)
    assert list(tmp_path.iterdir()) == []


def test_workers_read_the_slide_at_the_clients_path(slide, tmp_path):
    box = ((0, 64, 0, 64),)
    tiles = _read_slide_tiles(_SlideTiles(str(slide), 0, slide.stat().st_size, box))
    assert tiles.shape == (1, 64, 64, 3) and tiles.dtype == np.uint8
    with pytest.raises(InputError, match="cannot read the slide .*bytes there"):
        _read_slide_tiles(_SlideTiles(str(slide), 0, 1, box))
    missing = tmp_path / "elsewhere.tif"
    with pytest.raises(InputError, match=f"cannot read the slide {missing}"):
        _read_slide_tiles(_SlideTiles(str(missing), 0, 1, box))


def test_cli_predict_on_a_cluster(model, slide, cluster, reference, tmp_path, capsys):
    from pixelcam.cli import main
    from pixelcam.models import save_checkpoint

    ckpt = save_checkpoint(model, tmp_path / "ckpt" / "model")[1]
    out = tmp_path / "out"
    args = ["predict", str(ckpt), str(slide), "--out", str(out), "--device", "cpu"]
    args += ["--methods", "pixelcam,cam", "--tile", "128", "--overlap", "16", "--size", "64"]
    assert main([*args, "--scheduler", cluster.scheduler_address]) == 0
    assert "background" in capsys.readouterr().out
    _, ref_maps, _ = reference
    for m in METHODS:
        got = open_pyramid(out / f"slide_{m}.tif")[0].compute()
        np.testing.assert_allclose(got, ref_maps[m], atol=1e-5)
    assert main([*args, "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "tcp://127.0.0.1:1" in err and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main([*args, "--scheduler", "nowhere"])
    assert exc.value.code == 2


def test_the_dask_runner_is_a_tile_runner_with_the_local_runners_maps(model, image, client):
    from pixelcam.slide import LocalRunner, TileRunner
    from pixelcam.slide.cluster import DaskRunner

    batches = [[(0, 128, 0, 128), (0, 128, 112, 240)], [(200, 328, 224, 352)], [(384, 512, 0, 128)]]
    local = LocalRunner(model, image, METHODS, model_input=64, scheduler="sync")
    runner = DaskRunner(client, model, METHODS, image, model_input=64)
    assert isinstance(runner, TileRunner) and isinstance(local, TileRunner)
    try:
        got = list(runner.run(batches))
        for maps, ref in zip(got, local.run(batches), strict=True):
            for m in METHODS:
                np.testing.assert_allclose(maps[m], ref[m], atol=1e-5)
        assert runner.stats["scheduler"] == client.scheduler.address
        assert runner.stats["workers"] == 2 and runner.stats["in_flight"] == 4
        early = runner.run(batches)  # closing early cancels what is in flight
        next(early)
        early.close()
    finally:
        runner.close()  # a client passed in stays open
    assert client.status == "running"
    for _ in range(50):
        if not any(client.has_what().values()):
            break
        time.sleep(0.05)
    assert not any(client.has_what().values())
