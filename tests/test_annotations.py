"""Point-annotation files: round trips, strict validation of untrusted files, seed maps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import pixelcam.annotations as annotations
from pixelcam.annotations import (
    AnnotationSet,
    PointAnnotation,
    annotation_path_for,
    annotations_for_dataset,
    is_annotation_file,
    load_annotations,
    save_annotations,
    seed_map,
)
from pixelcam.errors import InputError

HEADER = "# pixelcam-annotations v1 shape=100,80"
COLUMNS = "image_id,row,col,label,source"


def _set(image_id: str = "train_1", shape=(100, 80), **kw) -> AnnotationSet:
    points = [
        PointAnnotation(10.0, 20.5, 1, "user"),
        PointAnnotation(99.25, 0.0, 0, "sampled"),
        PointAnnotation(-0.5, 79.4, 1, "user"),
    ]
    return AnnotationSet(image_id, shape, points, **kw)


def _csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, COLUMNS, *rows]) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_round_trip(tmp_path, suffix):
    ann = _set(image_path="/data/glas/train_1.png")
    path = save_annotations(tmp_path / f"train_1.points{suffix}", ann)
    loaded = load_annotations(path)
    assert loaded == ann
    assert loaded.image_shape == (100, 80) and isinstance(loaded.image_shape, tuple)


def test_csv_layout(tmp_path):
    path = save_annotations(tmp_path / "a.points.csv", _set())
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "# image_id: train_1"
    assert lines[2] == COLUMNS
    assert lines[3] == "train_1,10.0,20.5,1,user"
    assert len(lines) == 6


def test_json_layout_and_several_images(tmp_path):
    sets = [_set("a"), _set("b", shape=(300, 200))]
    path = save_annotations(tmp_path / "all.json", sets)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == "pixelcam-annotations" and doc["version"] == 1
    assert [d["image_id"] for d in doc["images"]] == ["a", "b"]
    loaded = load_annotations(path)
    assert isinstance(loaded, list) and loaded == sets
    single = json.loads(save_annotations(tmp_path / "one.json", _set()).read_text())
    assert single["image_id"] == "train_1" and single["image_shape"] == [100, 80]


def test_empty_set_round_trips_with_its_id(tmp_path):
    ann = AnnotationSet("benign/img 7", (5, 6))
    assert load_annotations(save_annotations(tmp_path / "x.csv", ann)) == ann
    assert load_annotations(save_annotations(tmp_path / "x.json", ann)) == ann


def test_csv_without_id_comment_takes_id_from_rows_or_file_name(tmp_path):
    rows = _csv(tmp_path / "r.csv", "img9,1,2,1,user")
    assert load_annotations(rows).image_id == "img9"
    empty = _csv(tmp_path / "train_5.points.csv")
    assert load_annotations(empty).image_id == "train_5"


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "a.points.csv"
    save_annotations(path, _set())
    before = path.read_text()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(annotations.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_annotations(path, _set("other"))
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.points.csv"]


def test_save_validates_first(tmp_path):
    bad = AnnotationSet("x", (10, 10), [PointAnnotation(1, 1, 2)])
    with pytest.raises(InputError, match="label"):
        save_annotations(tmp_path / "x.csv", bad)
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(InputError, match="one image"):
        save_annotations(tmp_path / "two.csv", [_set("a"), _set("b")])
    with pytest.raises(InputError, match=r"\.csv or \.json"):
        save_annotations(tmp_path / "x.txt", _set())
    with pytest.raises(InputError, match="outside the image"):
        save_annotations(
            tmp_path / "y.csv", AnnotationSet("y", (10, 10), [PointAnnotation(10, 0, 1)])
        )


def test_from_arrays_and_accessors():
    ann = AnnotationSet.from_arrays("img", (50, 40), [[1, 2], [3.5, 4]], [1, 0], "sampled")
    np.testing.assert_array_equal(ann.coords(), [[1, 2], [3.5, 4]])
    np.testing.assert_array_equal(ann.labels(), [1, 0])
    assert ann.sources() == ["sampled", "sampled"]
    assert ann.points[0] == PointAnnotation(1.0, 2.0, 1, "sampled")
    with pytest.raises(InputError, match="label"):
        AnnotationSet.from_arrays("img", (50, 40), [[1, 2]], [1.5])
    with pytest.raises(InputError, match="2 points but 1 labels"):
        AnnotationSet.from_arrays("img", (50, 40), [[1, 2], [3, 4]], [1])
    with pytest.raises(InputError, match="image_shape"):
        AnnotationSet.from_arrays("img", (0, 40), [], [])
    empty = AnnotationSet.from_arrays("img", (5, 5), np.empty((0, 2)), [])
    assert empty.coords().shape == (0, 2) and empty.labels().shape == (0,)


# ------------------------------------------------------------------------ bad files


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("image_id,row,col,label,source\nx,1,1,1,user\n", r"line 1: expected the header"),
        ("# pixelcam-annotations shape=10,10\n" + COLUMNS + "\n", r"line 1: malformed header"),
        ("# pixelcam-annotations v2 shape=10,10\n" + COLUMNS + "\n", "version 2"),
        ("# pixelcam-annotations v1 shape=0,10\n" + COLUMNS + "\n", "image_shape"),
        (HEADER + "\nimage_id,row,col,label\n", r"line 2: expected the column names"),
        (HEADER + "\n", r"line 2: expected the column names.*end of file"),
        ("", "line 1"),
    ],
)
def test_bad_csv_header(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=f"bad.csv.*{match}|{match}.*bad.csv"):
        load_annotations(path)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("a,1,1,2,user", "line 4: label must be 0 .* got '2'"),
        ("a,1,1,1.0,user", "line 4: label"),
        ("a,nan,1,1,user", "line 4: row is not a finite number"),
        ("a,1,inf,1,user", "line 4: col is not a finite number"),
        ("a,1,x,1,user", "line 4: col must be a number"),
        ("a,100,1,1,user", r"line 4: row 100.0 is outside the image \(height 100"),
        ("a,99.5,1,1,user", "line 4: row 99.5 is outside"),
        ("a,1,-0.6,1,user", "line 4: col -0.6 is outside"),
        ("a,1,1,1", "line 4: expected 5 fields, got 4"),
        ("a,1,1,1,", "line 4: source must be a non-empty string"),
        ("b,1,1,1,user", "line 4: image_id 'b' differs from 'a'"),
    ],
)
def test_bad_csv_rows_name_the_line(tmp_path, row, match):
    path = _csv(tmp_path / "bad.csv", "a,1,1,1,user", row)
    with pytest.raises(InputError, match=f"bad.csv {match}"):
        load_annotations(path)


def test_boundary_coordinates_are_accepted(tmp_path):
    path = _csv(tmp_path / "ok.csv", "a,-0.5,-0.5,1,user", "a,99.49,79.49,0,user")
    assert len(load_annotations(path).points) == 2


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([], "expected a JSON object"),
        ({"format": "other", "version": 1}, "'format' must be"),
        ({"format": "pixelcam-annotations", "version": 2}, "version 2"),
        ({"format": "pixelcam-annotations", "version": True}, "version True"),
        ({"format": "pixelcam-annotations", "version": 1, "image_id": "a"}, "missing field"),
        (
            {"format": "pixelcam-annotations", "version": 1, "image_id": 3, "image_shape": [1, 1],
             "points": []},
            "image_id must be a non-empty string",
        ),
        (
            {"format": "pixelcam-annotations", "version": 1, "image_id": "a",
             "image_shape": [10, 10.5], "points": []},
            "image_shape must be two positive integers",
        ),
        (
            {"format": "pixelcam-annotations", "version": 1, "image_id": "a",
             "image_shape": [10, 10], "points": {}},
            "points must be a list",
        ),
        (
            {"format": "pixelcam-annotations", "version": 1, "image_id": "a",
             "image_shape": [10, 10],
             "points": [{"row": 1, "col": 1, "label": 1, "source": "u"},
                        {"row": 1, "col": 1, "label": True, "source": "u"}]},
            r"points\[1\]: label must be 0",
        ),
        (
            {"format": "pixelcam-annotations", "version": 1, "image_id": "a",
             "image_shape": [10, 10], "points": [{"row": "1", "col": 1, "label": 1,
                                                  "source": "u"}]},
            r"points\[0\]: row must be a number",
        ),
        (
            {"format": "pixelcam-annotations", "version": 1, "image_id": "a",
             "image_shape": [10, 10], "points": [{"row": 1, "col": 1, "label": 1}]},
            r"points\[0\]: missing field 'source'",
        ),
        (
            {"format": "pixelcam-annotations", "version": 1,
             "images": [{"image_id": "a", "image_shape": [10, 10],
                         "points": [{"row": 1, "col": 12, "label": 1, "source": "u"}]}]},
            r"images\[0\]\.points\[0\]: col 12 is outside",
        ),
    ],
)  # fmt: skip
def test_bad_json_names_the_field(tmp_path, doc, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError, match=match):
        load_annotations(path)


def test_json_nan_and_truncated(tmp_path):
    nan = tmp_path / "nan.json"
    nan.write_text(
        '{"format": "pixelcam-annotations", "version": 1, "image_id": "a", "image_shape": '
        '[10, 10], "points": [{"row": NaN, "col": 1, "label": 1, "source": "u"}]}'
    )
    with pytest.raises(InputError, match=r"points\[0\]: row is not a finite number"):
        load_annotations(nan)
    good = save_annotations(tmp_path / "t.json", _set()).read_text()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(good[: len(good) // 2])
    with pytest.raises(InputError, match=r"truncated\.json is not valid JSON.*line \d+"):
        load_annotations(truncated)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes((HEADER + "\n" + COLUMNS + "\nimg\xe9,1,1,1,user\n").encode("latin-1"))
    with pytest.raises(InputError, match="latin.csv is not UTF-8"):
        load_annotations(path)


def test_file_size_and_point_count_limits(tmp_path, monkeypatch):
    path = save_annotations(tmp_path / "big.csv", _set())
    json_path = save_annotations(tmp_path / "big.json", [_set("a")])
    monkeypatch.setattr(annotations, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(InputError, match="big.csv is .* bytes, more than the limit"):
        load_annotations(path)
    monkeypatch.setattr(annotations, "MAX_FILE_BYTES", 10**9)
    monkeypatch.setattr(annotations, "MAX_POINTS", 2)
    with pytest.raises(InputError, match="big.csv line 6: more than 2 points"):
        load_annotations(path)
    with pytest.raises(InputError, match="3 points, more than the limit 2"):
        load_annotations(json_path)


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_annotations(tmp_path / "none.csv")
    with pytest.raises(InputError, match=r"\.csv or \.json"):
        load_annotations(tmp_path / "none.txt")


def test_is_annotation_file_and_path_for(tmp_path):
    assert is_annotation_file(tmp_path / "x.points.csv")  # by name, even absent
    plain = save_annotations(tmp_path / "plain.csv", _set())
    assert is_annotation_file(plain)
    assert is_annotation_file(save_annotations(tmp_path / "plain.json", _set()))
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert not is_annotation_file(other)
    assert annotation_path_for("/d/train_1.png") == Path("/d/train_1.points.csv")
    assert annotation_path_for("/d/a.b.tif", ".json") == Path("/d/a.b.points.json")


# ------------------------------------------------------------------------ datasets


def test_annotations_for_dataset_from_a_folder(tmp_path):
    for name in ("benign/img_1", "malignant/img_2", "malignant/img_3"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    save_annotations(tmp_path / "benign/img_1.points.csv", _set("img_1"))  # by base name
    save_annotations(tmp_path / "malignant/img_2.points.json", _set("malignant/img_2"))
    save_annotations(tmp_path / "unrelated.points.csv", _set("test_9"))  # not in ids
    ids = ["benign/img_1", "malignant/img_2", "malignant/img_3"]
    found = annotations_for_dataset(tmp_path, ids)
    assert sorted(found) == ["benign/img_1", "malignant/img_2"]
    assert found["benign/img_1"].image_id == "img_1"


def test_annotations_for_dataset_from_images_and_files(tmp_path):
    image = tmp_path / "train_1.png"
    image.write_bytes(b"png")
    save_annotations(annotation_path_for(image), _set("whatever", image_path=str(image)))
    other = save_annotations(tmp_path / "elsewhere.json", [_set("train_2"), _set("x")])
    lonely = tmp_path / "train_3.bmp"
    lonely.write_bytes(b"bmp")
    found = annotations_for_dataset([image, other, lonely], ["train_1", "train_2", "train_3"])
    assert sorted(found) == ["train_1", "train_2"]  # train_1 via image_path / file name


def test_annotations_for_dataset_errors(tmp_path):
    save_annotations(tmp_path / "a.points.csv", _set("img_1"))
    save_annotations(tmp_path / "b.points.csv", _set("img_1"))
    with pytest.raises(InputError, match="two annotation sets for image 'img_1'"):
        annotations_for_dataset(tmp_path, ["img_1"])
    with pytest.raises(InputError, match="match several images"):
        annotations_for_dataset(tmp_path / "a.points.csv", ["benign/img_1", "malignant/img_1"])
    with pytest.raises(InputError, match="does not exist"):
        annotations_for_dataset(tmp_path / "nope", ["img_1"])
    (tmp_path / "bad.points.csv").write_text("garbage\n")
    with pytest.raises(InputError, match="bad.points.csv"):
        annotations_for_dataset(tmp_path, ["zzz"])


# ------------------------------------------------------------------------ seed maps


def test_seed_map_marks_points_and_ignores_the_rest():
    ann = AnnotationSet.from_arrays("a", (10, 12), [[0, 0], [9, 11], [4.4, 5.6]], [1, 0, 1])
    seeds = seed_map(ann, (10, 12))
    assert seeds.dtype == np.uint8 and seeds.shape == (10, 12)
    assert seeds[0, 0] == 1 and seeds[9, 11] == 0 and seeds[4, 6] == 1
    assert (seeds == 255).sum() == 120 - 3


def test_seed_map_scales_to_the_target_size():
    ann = AnnotationSet.from_arrays("a", (100, 200), [[99, 199], [0, 0], [50, 100]], [1, 0, 1])
    seeds = seed_map(ann, (10, 20))
    assert seeds[9, 19] == 1 and seeds[0, 0] == 0 and seeds[5, 10] == 1
    assert (seeds != 255).sum() == 3


def test_seed_map_radius_draws_disks_clipped_at_the_border():
    ann = AnnotationSet.from_arrays("a", (50, 50), [[25, 25], [0, 0]], [1, 0])
    seeds = seed_map(ann, (50, 50), radius=2)
    assert (seeds == 1).sum() == 13  # a radius-2 digital disk
    assert (seeds == 0).sum() == 6  # its quarter at the corner
    assert seeds[25, 27] == 1 and seeds[26, 27] == 255


def test_seed_map_conflicts_and_precedence():
    # Same source, same pixel, different labels: ignore.
    clash = AnnotationSet.from_arrays("a", (10, 10), [[3, 3], [3, 3]], [1, 0], "sampled")
    assert seed_map(clash, (10, 10))[3, 3] == 255
    # A user's click overrides a sampled point on the same pixel.
    points = [PointAnnotation(3, 3, 1, "sampled"), PointAnnotation(3, 3, 0, "user")]
    assert seed_map(AnnotationSet("a", (10, 10), points), (10, 10))[3, 3] == 0
    # An exact point beats a neighbouring disk of the other label.
    near = AnnotationSet.from_arrays("a", (20, 20), [[5, 5], [5, 6]], [1, 0])
    seeds = seed_map(near, (20, 20), radius=2)
    assert seeds[5, 5] == 1 and seeds[5, 6] == 0 and seeds[5, 7] == 255 and seeds[5, 3] == 1


def test_seed_map_empty_and_bad_arguments():
    empty = AnnotationSet("a", (5, 5))
    assert (seed_map(empty, (4, 4)) == 255).all()
    with pytest.raises(InputError, match="radius"):
        seed_map(empty, (4, 4), radius=-1)
    with pytest.raises(InputError, match="shape_hw"):
        seed_map(empty, (0, 4))
    with pytest.raises(InputError, match="label"):
        seed_map(AnnotationSet("a", (5, 5), [PointAnnotation(1, 1, 3)]), (5, 5))


def test_seed_map_from_a_saved_file(tmp_path):
    path = save_annotations(tmp_path / "a.json", _set())
    seeds = seed_map(load_annotations(path), (100, 80))
    assert seeds[10, 21] == 1 and seeds[99, 0] == 0 and seeds[0, 79] == 1
    assert os.listdir(tmp_path) == ["a.json"]
