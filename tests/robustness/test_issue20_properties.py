"""Issue 20, property-based (Hypothesis): whatever a user or a file gives, the answer is a
result within the documented limits or the library's own error, never another exception:
the CLI's numeric arguments, image files of any shape and dtype, point-annotation files,
and checkpoint JSON documents."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pixelcam.errors import CheckpointError, InputError
from pixelcam.validation import MAX_INPUT_SIDE, MAX_WORKERS, MIN_INPUT_SIDE

#: Hypothesis' own array filling casts drawn values to float16/complex64 (its warning, not
#: the reader's: the reader's are turned into errors inside the tests)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# ---- the CLI's numeric arguments ---------------------------------------------------------

#: text a user may type for a number
NUMBER_TEXT = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "", " ", "abc", "0x10", "1_000", "١٢",
                     "1e3", "+7", "0.5", "1.0", "-0", "16", "8192", "8193", "15"]),
    st.text(max_size=6),
)  # fmt: skip


def _int_ok(low, high=None):
    return lambda v: isinstance(v, int) and v >= low and (high is None or v <= high)


def _float_ok(low, high=None, strict=False, finite=True):
    def ok(v):
        if not isinstance(v, float) or math.isnan(v) or (finite and math.isinf(v)):
            return False
        return (v > low if strict else v >= low) and (high is None or v <= high)

    return ok


TRAIN = ["train", "--out", "o"]
#: (argv before the option, option, destination, what an accepted value satisfies)
OPTIONS = [
    (TRAIN, "--epochs", "epochs", _int_ok(1, 100000)),
    (TRAIN, "--batch-size", "batch_size", _int_ok(1)),
    (TRAIN, "--n", "n", _int_ok(1)),
    (TRAIN, "--lr", "lr", _float_ok(0.0, strict=True, finite=False)),
    (TRAIN, "--lam", "lam", _float_ok(0.0)),
    (TRAIN, "--lr-step", "lr_step", _int_ok(1)),
    (TRAIN, "--resize", "resize", _int_ok(MIN_INPUT_SIDE, MAX_INPUT_SIDE)),
    (TRAIN, "--crop", "crop", _int_ok(MIN_INPUT_SIDE, MAX_INPUT_SIDE)),
    (TRAIN, "--eval-size", "eval_size", _int_ok(MIN_INPUT_SIDE, MAX_INPUT_SIDE)),
    (TRAIN, "--seed", "seed", _int_ok(0, 2**32 - 1)),
    (TRAIN, "--num-workers", "num_workers", _int_ok(0, MAX_WORKERS)),
    (TRAIN, "--synthetic-n-per-class", "synthetic_n_per_class", _int_ok(1)),
    (TRAIN, "--synthetic-size", "synthetic_size", _int_ok(MIN_INPUT_SIDE, MAX_INPUT_SIDE)),
    (TRAIN, "--decoder-width", "decoder_width", _int_ok(8, 4096)),
    (TRAIN, "--smooth-weight", "smooth_weight", _float_ok(0.0)),
    (TRAIN, "--smooth-sigma", "smooth_sigma", _float_ok(0.0, strict=True)),
    (["evaluate", "c"], "--threshold", "threshold", _float_ok(0.0, 1.0)),
    (["evaluate", "c"], "--size", "size", _int_ok(MIN_INPUT_SIDE, MAX_INPUT_SIDE)),
    (["evaluate", "c"], "--batch-size", "batch_size", _int_ok(1)),
    (["predict", "c", "i", "--out", "o"], "--size", "size", _int_ok(MIN_INPUT_SIDE, 8192)),
    (["predict", "c", "i", "--out", "o"], "--tile", "tile", _int_ok(MIN_INPUT_SIDE)),
    (["predict", "c", "i", "--out", "o"], "--overlap", "overlap", _int_ok(0)),
    (["predict", "c", "i", "--out", "o"], "--level", "level", _int_ok(0)),
    (["predict", "c", "i", "--out", "o"], "--min-tissue", "min_tissue", _float_ok(0.0, 1.0)),
    (["synth", "o"], "--n-per-class", "n_per_class", _int_ok(1, 10**6)),
    (["synth", "o"], "--size", "size", _int_ok(MIN_INPUT_SIDE, MAX_INPUT_SIDE)),
    (["synth", "o"], "--seed", "seed", _int_ok(0, 2**32 - 1)),
]


@FAST
@given(option=st.sampled_from(OPTIONS), text=NUMBER_TEXT)
def test_cli_numbers_are_in_range_or_refused_with_exit_2(option, text, capsys):
    from pixelcam.cli import build_parser

    before, flag, dest, ok = option
    try:
        args = build_parser().parse_args([*before, f"{flag}={text}"])
    except SystemExit as exc:
        assert exc.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and flag in err, err
        return
    value = getattr(args, dest)
    assert ok(value), (flag, text, value)
    if before is TRAIN:  # what the CLI accepts, the library accepts too
        from pixelcam.train import TrainConfig

        extra = {"crop": MIN_INPUT_SIDE} if dest == "resize" else {}
        extra = {"resize": MAX_INPUT_SIDE} if dest == "crop" else extra
        TrainConfig(out="o", **{dest: value, **extra}).validate()
    if dest == "threshold":
        from pixelcam.validation import check_threshold

        assert check_threshold(value) == value


# ---- image files of any shape and dtype ---------------------------------------------------

DTYPES = st.sampled_from(
    ["uint8", "uint16", "int8", "int16", "int32", "int64", "uint32", "float16", "float32",
     "float64", "bool", "complex64"]
)  # fmt: skip
SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
    st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(1, 6)),
    st.tuples(st.integers(1, 5), st.integers(1, 24), st.integers(1, 24)),  # planar or a stack
    hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=4),
)


@st.composite
def image_arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(SHAPES)
    if dtype.kind == "f":
        big = float(np.finfo(dtype).max)
        elements = st.one_of(  # the extremes often: a range too wide to subtract overflows
            st.floats(width=dtype.itemsize * 8, allow_nan=True, allow_infinity=True),
            st.sampled_from([big, -big, big / 3, -big / 3, 0.0, 1.0, 255.0, 65535.0, -1.0]),
        )
    elif dtype.kind == "c":
        elements = st.complex_numbers(width=64, allow_nan=True, allow_infinity=True)
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _write(path: Path, array: np.ndarray, fmt: str) -> bool:
    """Write ``array`` as ``fmt``; False when that writer cannot store it."""
    import tifffile
    from PIL import Image

    try:
        if fmt == "tif":
            tifffile.imwrite(path, array)
        else:
            Image.fromarray(array).save(path)
    except Exception:  # the writer's limits, not the reader's: nothing to test
        return False
    return True


@FAST
@given(array=image_arrays(), fmt=st.sampled_from(["tif", "png", "bmp"]))
def test_read_image_of_any_array_written_to_disk(array, fmt, tmp_path_factory):
    from pixelcam.data.io import image_shape, read_image

    path = tmp_path_factory.mktemp("img") / f"image.{fmt}"
    assume(_write(path, array, fmt))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no invalid casts (NaN -> uint8)
        try:
            image = read_image(path)
        except InputError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    assert image.flags.writeable and image.flags.c_contiguous
    if array.ndim == 2:
        assert image.shape[:2] == array.shape
        assert image_shape(path) == array.shape
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3 and fmt != "tif":
        np.testing.assert_array_equal(image, array)


# ---- point-annotation files --------------------------------------------------------------

_NUM = st.one_of(
    st.integers(-5, 80).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e400", "-0.5", "63.49", "nan", "", "x", "9" * 5000]),
)  # fmt: skip
_ROW = st.tuples(
    st.sampled_from(["img", "other", "", "a,b", '"q"']), _NUM, _NUM,
    st.sampled_from(["0", "1", "2", " 1", "1.0", "", "yes"]),
    st.sampled_from(["user", "", "x" * 70, "a\x01b"]),
).map(lambda r: ",".join(r))  # fmt: skip
_CSV_LINE = st.one_of(
    st.builds(lambda v, h, w: f"# pixelcam-annotations v{v} shape={h},{w}",
              st.sampled_from(["1", "2", "01", "x"]), _NUM, _NUM),
    st.sampled_from(["# image_id: img", "# image_path: /x/img.png", "# image_id:",
                     "image_id,row,col,label,source", "image_id,row", "", "#"]),
    _ROW, st.text(max_size=30),
)  # fmt: skip
_JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**30) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
_POINT = st.fixed_dictionaries(
    {}, optional={"row": _JSON_VALUE | st.integers(-2, 70), "col": st.integers(-2, 70),
                  "label": st.sampled_from([0, 1, 2, True, 1.0, "1"]),
                  "source": st.sampled_from(["user", "", 3])},
)  # fmt: skip
_IMAGE = st.fixed_dictionaries(
    {}, optional={"image_id": st.sampled_from(["img", "", 5]),
                  "image_shape": st.sampled_from([[64, 64], [0, 4], [64], "64,64", [1e9, 2],
                                                  [2**70, 3], [True, 4]]),
                  "image_path": st.sampled_from([None, "/x.png", 3]),
                  "points": st.lists(_POINT, max_size=4) | _JSON_VALUE},
)  # fmt: skip
_ANNOTATION_JSON = st.one_of(
    _JSON_VALUE,
    st.builds(lambda image, fmt, version: {**image, "format": fmt, "version": version},
              _IMAGE, st.sampled_from(["pixelcam-annotations", "other"]),
              st.sampled_from([1, 2, True, "1", 1.0])),
    st.builds(lambda images: {"format": "pixelcam-annotations", "version": 1,
                              "images": images}, st.lists(_IMAGE, max_size=3) | _JSON_VALUE),
)  # fmt: skip


def _check_sets(result) -> None:
    from pixelcam.annotations import AnnotationSet

    sets = result if isinstance(result, list) else [result]
    for ann in sets:
        assert isinstance(ann, AnnotationSet)
        h, w = ann.image_shape
        for p in ann.points:
            assert p.label in (0, 1) and math.isfinite(p.row) and math.isfinite(p.col)
            assert -0.5 <= p.row < h - 0.5 and -0.5 <= p.col < w - 0.5


@FAST
@given(lines=st.lists(_CSV_LINE, max_size=8))
def test_annotation_csv_files(lines, tmp_path_factory):
    from pixelcam.annotations import load_annotations

    path = tmp_path_factory.mktemp("ann") / "img.points.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        result = load_annotations(path)
    except InputError as exc:
        assert str(path) in str(exc)
        return
    _check_sets(result)


@FAST
@given(doc=_ANNOTATION_JSON, raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_annotation_json_files(doc, raw, tmp_path_factory):
    from pixelcam.annotations import load_annotations

    path = tmp_path_factory.mktemp("ann") / "img.points.json"
    if raw is None:
        path.write_text(json.dumps(doc), encoding="utf-8")
    else:
        path.write_bytes(raw)
    try:
        result = load_annotations(path)
    except InputError as exc:
        assert str(path) in str(exc)
        return
    _check_sets(result)


# ---- checkpoint JSON ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_checkpoint(tmp_path_factory) -> tuple[dict, bytes, object]:
    """A real checkpoint's json document and weights, and a model it fits."""
    from pixelcam.models import build_model, save_checkpoint

    model = build_model("test_resnet", num_classes=2, head="gap", pixel_head="linear")
    stem = tmp_path_factory.mktemp("valid") / "ok"
    weights, doc = save_checkpoint(model, stem, {"class_names": ["a", "b"]})
    return json.loads(doc.read_text()), weights.read_bytes(), model


_CONFIG_VALUE = _JSON_VALUE | st.sampled_from(
    ["test_resnet", "gap", "linear", "deepmil", "unet", "negev", None, 2, 0, -1, 10**12, True,
     [64, 32], 10**9, {"mil_hidden": 10**9}, {"drop_path_rate": 0.1}, [10**9] * 5]
)  # fmt: skip
_FIELD = st.sampled_from(["format", "format_version", "config", "meta", "weights", "versions"])
_CONFIG_KEY = st.sampled_from(
    ["backbone", "num_classes", "head", "pixel_head", "wsol_stride", "head_kwargs", "decoder",
     "decoder_channels", "timm_kwargs", "freeze_encoder", "bogus"]
)  # fmt: skip


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    fields=st.dictionaries(_FIELD, _JSON_VALUE, max_size=3),
    config=st.dictionaries(_CONFIG_KEY, _CONFIG_VALUE, max_size=3),
    drop=st.lists(_FIELD, max_size=2),
    with_weights=st.booleans(),
    text=st.one_of(st.none(), st.text(max_size=20), st.just("[" * 5000), st.just("9" * 5000)),
)
def test_checkpoint_json_with_random_fields(
    valid_checkpoint, fields, config, drop, with_weights, text, tmp_path_factory
):
    from pixelcam.models import load_checkpoint, load_state_into
    from pixelcam.models.checkpoint import read_checkpoint_info

    doc, weights, _ = valid_checkpoint
    doc = json.loads(json.dumps(doc))
    doc["config"].update(config)
    doc.update(fields)
    for key in drop:
        doc.pop(key, None)
    stem = tmp_path_factory.mktemp("ckpt") / "model"
    stem.with_suffix(".json").write_text(text if text is not None else json.dumps(doc))
    if with_weights:
        stem.with_suffix(".safetensors").write_bytes(weights)
    target = valid_checkpoint[2]
    for load in (read_checkpoint_info, load_checkpoint, lambda p: load_state_into(target, p)):
        try:
            load(stem)
        except (CheckpointError, InputError) as exc:
            assert "\n" not in str(exc).strip() or "Traceback" not in str(exc)


@pytest.mark.parametrize(
    "text",
    [
        '{"format": ' + "9" * 5000 + "}",
        json.dumps({"format": "pixelcam-annotations", "version": 1, "image_id": "x",
                    "image_shape": [64, 64],
                    "points": [{"row": 10**400, "col": 1, "label": 1, "source": "user"}]}),
    ],
    ids=["5000-digit-number", "integer-above-1e308"],
)  # fmt: skip
def test_annotation_json_with_huge_numbers(text, tmp_path):
    from pixelcam.annotations import load_annotations

    path = tmp_path / "img.points.json"
    path.write_text(text)
    with pytest.raises(InputError):
        load_annotations(path)


@settings(max_examples=200, deadline=None)
@given(array=image_arrays())
def test_to_rgb_uint8_of_any_array(array):
    """The conversion behind every reader and the panel, without a file: any dtype, any
    values (NaN, infinities, -1e308..1e308) give uint8 RGB or an InputError, and no numpy
    warning (an overflow or an invalid cast would give garbage pixels)."""
    from pixelcam.data.io import to_rgb_uint8

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            rgb = to_rgb_uint8(array)
        except InputError:
            return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[-1] == 3
    if array.ndim == 2:
        assert rgb.shape[:2] == array.shape
