"""pixelcam.refine: live refinement of the pixel head from a few points (issue 17).

Fast: the bundled sample models (timm's tiny ``test_resnet``, 128 px input, 16x16 maps) on
generated tiles; every test runs on the CPU in about a second.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelcam.annotations import AnnotationSet, save_annotations
from pixelcam.data.synthetic import generate_tile
from pixelcam.errors import InputError
from pixelcam.refine import Refiner, RefitSettings, fit_logistic, refine_files

MODELS = Path(__file__).resolve().parents[1] / "napari_pixelcam" / "models"
PIXELCAM = MODELS / "sample_pixelcam.json"
BASELINE = MODELS / "sample_baseline.json"
SIZE = 160


@pytest.fixture(scope="module")
def tiles() -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Four generated tiles never seen by the sample model: id -> (rgb, mask, label)."""
    out = {}
    for k, (label, seed) in enumerate([(0, 901), (1, 902), (0, 903), (1, 904)]):
        rgb, mask = generate_tile(label, SIZE, seed)
        out[f"tile{k}"] = (rgb, mask, label)
    return out


def make_refiner(tiles, path=PIXELCAM, train=("tile0", "tile1", "tile2"), **kw) -> Refiner:
    refiner = Refiner.from_checkpoint(path, **kw)
    for image_id, (rgb, _, label) in tiles.items():
        refiner.add_image(image_id, rgb, label=label, train=image_id in train)
    return refiner


def worst(map_: np.ndarray, mask: np.ndarray, label: int, n: int = 1) -> np.ndarray:
    """The ``n`` pixels of class ``label`` (well inside it) the map gets most wrong."""
    from scipy import ndimage as ndi

    inside = ndi.distance_transform_edt(mask == label) > 10
    score = np.where(inside, map_ if label == 0 else -map_, -np.inf).ravel()
    picked = []
    for idx in np.argsort(-score):
        r, c = np.unravel_index(idx, mask.shape)
        if all((r - a) ** 2 + (c - b) ** 2 > 15**2 for a, b in picked):
            picked.append((r, c))
        if len(picked) == n:
            break
    return np.array(picked, dtype=float)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _clicks(tiles, maps):
    """Two foreground and two background clicks where the map is most wrong, on two tiles."""
    spec = {}
    for image_id in ("tile0", "tile1"):
        _, mask, _ = tiles[image_id]
        pts = np.concatenate([worst(maps[image_id], mask, 1, 2), worst(maps[image_id], mask, 0, 2)])
        spec[image_id] = (pts, [1, 1, 0, 0])
    return spec


def test_clicks_move_the_map_toward_their_labels_and_flip_their_cells(tiles):
    refiner = make_refiner(tiles)
    before = refiner.maps()
    spec = _clicks(tiles, before)
    for image_id, (pts, labels) in spec.items():
        refiner.set_points(image_id, pts, labels)
    res = refiner.refit()
    assert res.n_fg == 4 and res.n_bg == 4 and res.converged
    assert set(res.maps) == set(tiles) and res.maps["tile0"].shape == (SIZE, SIZE)
    flipped, wrong = 0, 0
    for image_id, (pts, labels) in spec.items():
        for (r, c), label in zip(pts.astype(int), labels):
            old, new = before[image_id][r, c], res.maps[image_id][r, c]
            assert (new - old) * (1 if label else -1) > 0  # toward the label, every one
            if (old > 0.5) != bool(label):
                wrong += 1
                flipped += (new > 0.5) == bool(label)
    assert wrong >= 6 and flipped >= wrong // 2  # the defaults are cautious...
    strong = make_refiner(tiles)
    for image_id, (pts, labels) in spec.items():
        strong.set_points(image_id, pts, labels)
    maps = strong.refit(point_weight=10).maps  # ...a heavier point flips every clicked cell
    for image_id, (pts, labels) in spec.items():
        for (r, c), label in zip(pts.astype(int), labels):
            assert (maps[image_id][r, c] > 0.5) == bool(label)


def test_a_click_between_cells_samples_the_features_bilinearly(tiles):
    refiner = make_refiner(tiles)
    feats = refiner._features("tile0")[0]  # [K, 16, 16] for a 160 px tile at 128 px input
    cell = SIZE / feats.shape[-1]  # 10 image pixels per cell
    # the centre of cell (i, j) is at image pixel ((i + 0.5) * cell - 0.5, (j + 0.5) * cell - 0.5)
    row = 5.5 * cell - 0.5
    between = refiner._sample("tile0", np.array([[row, 4.0 * cell - 0.5]]))[0]
    torch.testing.assert_close(between, 0.5 * (feats[:, 5, 3] + feats[:, 5, 4]))
    centre = refiner._sample("tile0", np.array([[row, 3.5 * cell - 0.5]]))[0]
    torch.testing.assert_close(centre, feats[:, 5, 3])


def test_the_prior_keeps_an_unclicked_image_close_to_its_map(tiles):
    refiner = make_refiner(tiles)
    before = refiner.maps()
    for image_id, (pts, labels) in _clicks(tiles, before).items():
        refiner.set_points(image_id, pts, labels)
    after = refiner.refit().maps
    loose = refiner.refit(anchor=0.0, prior=0.01).maps  # almost no prior: the clicks rule
    for image_id in ("tile2", "tile3"):  # annotated-but-unclicked, and held out
        diff = np.abs(after[image_id] - before[image_id])
        assert diff.mean() < 0.05
        assert diff.mean() < 0.5 * np.abs(loose[image_id] - before[image_id]).mean()
        assert np.corrcoef(after[image_id].ravel(), before[image_id].ravel())[0, 1] > 0.95


def test_undo_restores_the_previous_head_exactly(tiles):
    refiner = make_refiner(tiles)
    base_state, base_maps = refiner.head_state(), refiner.maps()
    _, mask, _ = tiles["tile1"]
    refiner.set_points("tile1", worst(base_maps["tile1"], mask, 1, 2), [1, 1])
    first = refiner.refit()
    refiner.set_points("tile1", worst(base_maps["tile1"], mask, 0, 2), [0, 0])
    second = refiner.refit()
    assert not states_equal(first.head_state, second.head_state)
    assert states_equal(refiner.undo(), first.head_state)
    np.testing.assert_array_equal(refiner.maps()["tile1"], first.maps["tile1"])
    assert states_equal(refiner.undo(), base_state)
    np.testing.assert_array_equal(refiner.maps()["tile1"], base_maps["tile1"])
    assert not refiner.can_undo
    with pytest.raises(InputError, match="nothing to undo"):
        refiner.undo()


def test_refits_do_not_depend_on_history_and_no_points_give_the_base_head(tiles):
    refiner = make_refiner(tiles)
    base = refiner.head_state()
    assert states_equal(refiner.refit().head_state, base)  # nothing to learn from
    _, mask, _ = tiles["tile0"]
    pts = worst(refiner.maps()["tile0"], mask, 1, 2)
    refiner.set_points("tile0", pts, [1, 1])
    once = refiner.refit()
    again = refiner.refit()  # warm-started from `once`: the same optimum
    for k in once.head_state:
        torch.testing.assert_close(once.head_state[k], again.head_state[k], atol=1e-4, rtol=1e-4)
    refiner.clear_points()
    assert states_equal(refiner.refit().head_state, base)


def test_saved_refined_checkpoint_reloads_to_the_same_maps_and_names_its_parent(tiles, tmp_path):
    from pixelcam.inference import predict_maps
    from pixelcam.models import load_checkpoint

    refiner = make_refiner(tiles)
    rgb, mask, _ = tiles["tile0"]
    ann = AnnotationSet.from_arrays(
        "tile0", mask.shape, worst(refiner.maps()["tile0"], mask, 1, 2), [1, 1]
    )
    points_file = save_annotations(tmp_path / "tile0.points.csv", ann)
    refiner.set_points("tile0", ann)
    res = refiner.refit()
    weights, json_path = refiner.save(tmp_path / "refined", annotations=[points_file])

    model, meta = load_checkpoint(json_path)
    for image_id, (image, _, _) in tiles.items():
        ref = predict_maps(model, image, ["pixelcam"], size=refiner.size).maps["pixelcam"]
        np.testing.assert_allclose(ref, res.maps[image_id], atol=2e-3)
    rec = meta["refine"]
    parent_sha = hashlib.sha256(PIXELCAM.with_suffix(".safetensors").read_bytes()).hexdigest()
    assert rec["parent"]["sha256"] == parent_sha
    assert rec["annotations"] == [
        {"path": str(points_file), "sha256": hashlib.sha256(points_file.read_bytes()).hexdigest()}
    ]
    assert rec["settings"] == res.settings.to_dict()
    assert rec["points"] == {"tile0": {"fg": 2, "bg": 0}}
    assert meta["map_method"] == "pixelcam" and meta["class_names"] == ["benign", "malignant"]
    assert "metrics" not in meta  # the parent's numbers do not describe this model
    # the same backbone weights
    parent, _ = load_checkpoint(PIXELCAM)
    for (k, a), (_, b) in zip(
        parent.backbone.state_dict().items(), model.backbone.state_dict().items()
    ):
        assert torch.equal(a, b), k
    assert json.loads(json_path.read_text())["weights"]["file"] == weights.name


def test_one_sided_clicks_do_not_turn_the_whole_map_foreground(tiles):
    refiner = make_refiner(tiles)
    before = refiner.maps()
    for image_id in ("tile0", "tile1", "tile2"):
        _, mask, _ = tiles[image_id]
        refiner.set_points(image_id, worst(before[image_id], mask, 1, 5), [1] * 5)
    res = refiner.refit()
    assert res.n_fg == 15 and res.n_bg == 0
    for image_id, (_, mask, _) in tiles.items():
        bg_before = (before[image_id][mask == 0] > 0.5).mean()
        bg_after = (res.maps[image_id][mask == 0] > 0.5).mean()
        assert bg_after < bg_before + 0.15, image_id
        assert res.maps[image_id].mean() < before[image_id].mean() + 0.1


def test_foreground_and_background_points_are_balanced(tiles):
    refiner = make_refiner(tiles)
    pts = np.array([[20.0, 20.0], [30.0, 30.0], [40.0, 40.0], [50.0, 50.0]])
    refiner.set_points("tile0", pts, [1, 0, 0, 0])
    _, y, w, n_fg, n_bg, n_other = refiner._point_rows(refiner.settings)
    assert (n_fg, n_bg, n_other) == (1, 3, 0)
    assert float(w[y == 1].sum()) == pytest.approx(float(w[y == 0].sum()))
    assert float(w.sum()) == pytest.approx(4 * refiner.settings.point_weight)


@pytest.mark.parametrize(
    ("coords", "labels", "message"),
    [
        ([[170.0, 10.0]], [1], "row 170.0 is outside the image"),
        ([[10.0, -3.0]], [0], "col -3.0 is outside the image"),
        ([[10.0, 10.0]], [2], "label must be 0 .background. or 1 .foreground."),
        ([[10.0, 10.0]], ["fg"], "label must be 0"),
        ([[np.nan, 10.0]], [1], "not a finite number"),
        ([[10.0, 10.0], [20.0, 20.0]], [1], "2 points but 1 labels"),
    ],
)
def test_bad_points_are_refused_with_a_clear_message(tiles, coords, labels, message):
    refiner = make_refiner(tiles)
    with pytest.raises(InputError, match=message):
        refiner.set_points("tile0", np.array(coords, dtype=float), labels)
    assert refiner.points("tile0") is None  # nothing half-set


def test_unknown_images_shapes_and_settings_are_refused(tiles):
    refiner = make_refiner(tiles)
    with pytest.raises(InputError, match="unknown image 'nope': add_image it first"):
        refiner.set_points("nope", np.zeros((1, 2)), [1])
    with pytest.raises(InputError, match="train=False"):
        refiner.set_points("tile3", np.zeros((1, 2)), [1])
    other = AnnotationSet.from_arrays("tile0", (100, 100), [[5.0, 5.0]], [1])
    with pytest.raises(InputError, match="100x100 .HxW. image, but the image is 160x160"):
        refiner.set_points("tile0", other)
    with pytest.raises(InputError, match="need their labels"):
        refiner.set_points("tile0", np.zeros((1, 2)))
    for bad in ({"prior": 0.0}, {"anchor": -1.0}, {"seeds": 1.5}, {"sampler": "magic"}):
        with pytest.raises(InputError):
            refiner.refit(**bad)
    with pytest.raises(InputError, match="unknown refit setting"):
        refiner.refit(lam=3)


def test_a_baseline_checkpoint_becomes_a_pixelcam_model(tiles, tmp_path):
    from pixelcam.inference import predict_maps
    from pixelcam.metrics import pxap
    from pixelcam.models import load_checkpoint

    refiner = make_refiner(tiles, path=BASELINE)
    assert not refiner.had_pixel_head and refiner.seed_method == "layercam"
    maps = refiner.maps()  # the first head, fitted from the LayerCAM seeds
    assert refiner.init_info["seeds_per_class"] == 10 and not refiner.can_undo
    for image_id, (_, mask, _) in tiles.items():
        assert pxap(maps[image_id], mask) > 100 * mask.mean() + 10  # far above a constant map
    _, mask, _ = tiles["tile1"]
    refiner.set_points("tile1", worst(maps["tile1"], mask, 1, 2), [1, 1])
    res = refiner.refit()
    _, json_path = refiner.save(tmp_path / "from-baseline")
    model, meta = load_checkpoint(json_path)
    assert model.config["pixel_head"] == "linear"
    assert meta["refine"]["initialised_from_seeds"]["method"] == "layercam"
    rgb = tiles["tile1"][0]
    ref = predict_maps(model, rgb, ["pixelcam"], size=refiner.size).maps["pixelcam"]
    np.testing.assert_allclose(ref, res.maps["tile1"], atol=2e-3)
    assert refiner.undo() is not None and not refiner.can_undo  # back to the seeded head


def test_the_mlp_head_refits_its_last_layer_only(tiles):
    from pixelcam.models import build_model, load_checkpoint

    parent, meta = load_checkpoint(PIXELCAM)
    model = build_model(**{**parent.config, "pixel_head": "mlp"})
    model.load_state_dict(parent.state_dict(), strict=False)  # backbone + image head
    torch.manual_seed(0)
    refiner = Refiner(model, parent_meta=meta)
    for image_id, (rgb, _, label) in tiles.items():
        refiner.add_image(image_id, rgb, label=label)
    assert refiner._features("tile0").shape[1] == model.feature_channels // 4  # hidden
    before = refiner.maps()
    _, mask, _ = tiles["tile0"]
    fg, bg = worst(before["tile0"], mask, 1, 2), worst(before["tile0"], mask, 0, 2)
    refiner.set_points("tile0", np.concatenate([fg, bg]), [1, 1, 0, 0])
    base = refiner.head_state()
    res = refiner.refit()
    changed = {k for k in base if not torch.equal(base[k], res.head_state[k])}
    assert changed == {"layers.4.weight", "layers.4.bias"}
    r, c = fg[0].astype(int)
    assert res.maps["tile0"][r, c] > before["tile0"][r, c]
    r, c = bg[0].astype(int)
    assert res.maps["tile0"][r, c] < before["tile0"][r, c]


def test_cam_seeds_are_drawn_once_per_image_and_used(tiles):
    refiner = make_refiner(tiles)
    res = refiner.refit(seeds=5)
    assert res.n_seeds == 3 * 10  # 5 FG + 5 BG on each of the 3 annotated images
    again = refiner.refit(seeds=5)
    assert states_equal(res.head_state, again.head_state) or all(
        torch.allclose(res.head_state[k], again.head_state[k], atol=1e-4) for k in res.head_state
    )


def test_features_are_cached_as_float16_within_the_budget(tiles):
    refiner = make_refiner(tiles)
    feats = refiner._features("tile0")
    per_image = feats.nelement() * 2  # float16
    assert refiner.cache_bytes == 4 * per_image
    maps = refiner.maps()
    small = make_refiner(tiles, cache_mb=1.5 * per_image / 2**20)  # room for one image
    assert small.cache_bytes == per_image
    for image_id, m in small.maps().items():  # evicted features are recomputed
        np.testing.assert_array_equal(m, maps[image_id])


@pytest.mark.parametrize("n", [5, 40])  # Woodbury (N < D) and primal (N >= D) steps
def test_fit_logistic_reaches_the_optimum(n):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, 12, generator=gen)
    y = (torch.rand(n, generator=gen) > 0.5).float()
    w = torch.rand(n, generator=gen) + 0.5
    theta0 = torch.randn(12, generator=gen)
    lam = torch.full((12,), 0.3)
    theta, _, ok = fit_logistic(x, y, w, theta0, lam, tol=1e-7)
    assert ok
    p = torch.sigmoid(x @ theta)
    grad = x.T @ (w * (p - y)) + lam * (theta - theta0)
    assert float(grad.abs().max()) < 1e-4


def test_refine_files_finds_images_and_writes_a_checkpoint(tiles, tmp_path):
    from skimage.io import imsave

    from pixelcam.models import read_checkpoint_info

    rgb, mask, _ = tiles["tile0"]
    imsave(tmp_path / "tile0.png", rgb, check_contrast=False)
    ann = AnnotationSet.from_arrays("tile0", mask.shape, [[80.0, 80.0], [5.0, 5.0]], [1, 0])
    points = save_annotations(tmp_path / "tile0.points.csv", ann)  # beside its image
    summary = refine_files(PIXELCAM, [tmp_path], tmp_path / "out" / "refined")
    assert summary.images == {"tile0": tmp_path / "tile0.png"}
    assert summary.result.n_fg == 1 and summary.result.n_bg == 1
    info = read_checkpoint_info(summary.json)
    assert info["meta"]["refine"]["annotations"][0]["path"] == str(points)

    elsewhere = tmp_path / "notes"
    elsewhere.mkdir()
    save_annotations(elsewhere / "tile0.points.csv", ann)  # no image beside it
    with pytest.raises(InputError, match="cannot find the image of .*give --images FOLDER"):
        refine_files(PIXELCAM, [elsewhere / "tile0.points.csv"], tmp_path / "x")
    summary = refine_files(
        PIXELCAM, [elsewhere / "tile0.points.csv"], tmp_path / "y", images=tmp_path
    )
    assert summary.images["tile0"] == tmp_path / "tile0.png"
    with pytest.raises(InputError, match="does not exist"):
        refine_files(PIXELCAM, [tmp_path / "missing.points.csv"], tmp_path / "z")


def _cli_has_refine() -> bool:
    from pixelcam.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return "refine" in sub.choices


@pytest.mark.skipif(not _cli_has_refine(), reason="pixelcam.cli has no 'refine' command yet")
def test_cli_refine(tiles, tmp_path, capsys):
    from skimage.io import imsave

    from pixelcam.cli import main
    from pixelcam.models import load_checkpoint

    rgb, mask, _ = tiles["tile0"]
    imsave(tmp_path / "tile0.png", rgb, check_contrast=False)
    ann = AnnotationSet.from_arrays("tile0", mask.shape, [[80.0, 80.0], [5.0, 5.0]], [1, 0])
    points = save_annotations(tmp_path / "tile0.points.csv", ann)
    out = tmp_path / "refined"
    assert main(["refine", str(PIXELCAM), "--annotations", str(points), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "1 FG + 1 BG points on 1 image" in line and "refined.safetensors" in line
    _, meta = load_checkpoint(out)
    assert meta["refine"]["settings"]["prior"] == RefitSettings().prior
    bad = save_annotations(
        tmp_path / "bad.points.csv", AnnotationSet.from_arrays("bad", (9, 9), [[1.0, 1.0]], [1])
    )
    code = main(["refine", str(PIXELCAM), "--annotations", str(bad), "--out", str(out)])
    assert code == 2
    assert "cannot find the image of" in capsys.readouterr().err
