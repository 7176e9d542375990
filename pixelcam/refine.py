"""Live refinement: a pathologist corrects a few pixels and the PixelCAM map follows.

PixelCAM's pixel head is a 1x1-conv classifier on the encoder's last feature map. Here it is
refitted, in well under a second on a CPU, from:

- the user's points (trusted; each is the feature vector sampled BILINEARLY at the click's
  image position, so a click between feature cells counts where it falls; foreground and
  background clicks weigh the same in total, whatever their numbers);
- anchors: the base head's own map on the feature cells of the annotated images (soft
  targets), a pull toward the current head measured on the maps, so a few clicks correct
  what they touch and leave the rest, and one-sided clicks do not flip the whole map;
- optionally the CAM seeds the trainer would draw (:func:`pixelcam.pseudo_labels.sample_points`
  on the baseline CAM of the model itself, or of a ``teacher``): PixelCAM's own
  pseudo-labels; points saved with a source other than ``"user"`` (e.g. ``"sampled"``)
  count as such seeds too;
- an L2 pull of the weights toward the BASE head (the checkpoint's, or for a baseline the
  one fitted from its CAM seeds): :attr:`RefitSettings.prior`.

Every refit solves the same problem from the base head with ALL current points (a MAP
estimate), so the result depends on the points, not on the order they were given in.

The problem: binary logistic regression of the foreground logit (the head's two output
channels only matter through their difference; the new head moves each channel by half the
change) on features standardised over the cells of the annotated images (mean removed,
scaled to unit mean squared norm), with an isotropic L2 prior on the weights and a stronger
one on the bias (:attr:`RefitSettings.bias_prior`). It is solved by damped Newton steps in
float32 (Woodbury form, an ``N x N`` solve, when there are fewer rows than channels):
tens of milliseconds for hundreds of points and anchors on a CPU.

The MLP pixel head (the paper's multi-layer ablation) is refitted the same way: its hidden
layers are kept and only its last 1x1 conv is refitted, on the cached hidden activations. A
model without a pixel head (a baseline checkpoint) gets a linear one, fitted from its CAM
seeds at the first refit: refinement turns any baseline into a PixelCAM model in seconds.

Encoder features are computed once per image (:meth:`Refiner.add_image`) and cached on the
CPU within a memory budget (least recently used first out, recomputed on demand), as float16
whenever that changes the map by less than :data:`FP16_TOLERANCE`. No Qt: the napari panel
calls this from a worker (one call at a time; a :class:`Refiner` is not thread-safe).

Typical use::

    refiner = Refiner.from_checkpoint("runs/glas-pix/best_loc.json")
    refiner.add_image("train_1", rgb)
    refiner.set_points("train_1", load_annotations("train_1.points.csv"))
    result = refiner.refit()            # RefitResult(head_state, maps, seconds, ...)
    refiner.undo()                      # back to the previous head, exactly
    refiner.save("runs/refined", annotations=["train_1.points.csv"])
"""

from __future__ import annotations

import copy
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelcam.annotations import ANNOTATION_SUFFIXES, USER_SOURCE, AnnotationSet
from pixelcam.errors import InputError
from pixelcam.models.checkpoint import file_sha256
from pixelcam.models.heads import LinearPixelHead
from pixelcam.models.model import WSOLModel

__all__ = [
    "FP16_TOLERANCE",
    "RefineSummary",
    "RefitResult",
    "RefitSettings",
    "Refiner",
    "find_image_for",
    "load_point_files",
    "refine_files",
]

#: Largest change of a map value (in [0, 1]) float16 features may cause; above it an image's
#: features are cached as float32.
FP16_TOLERANCE = 1e-3
#: Baseline CAMs tried, in order, for the seeds when none is named.
SEED_METHODS = ("layercam", "cam", "deepmil", "sat")
#: Largest number of training rows (points + seeds) one refit takes.
MAX_ROWS = 200_000
_IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------
# Settings and results


@dataclass(frozen=True)
class RefitSettings:
    """How a refit weighs the user's points, the map it starts from, the CAM seeds and the
    prior. The defaults were chosen with ``benchmarks/refine.py`` (docs/refine-notes.md).

    - ``point_weight``: weight of one user point; the foreground and the background points
      each get half of ``point_weight * n_points`` when both are present.
    - ``anchor``: weight, per annotated image, of keeping the BASE head's map on up to
      ``anchor_cells`` of its feature cells (soft targets: the base head's probabilities;
      a fixed random subset when the map has more cells). The pull toward the current
      head measured on the maps themselves: it says "the rest of the map was right", so
      one-sided clicks (all foreground) move the cells that look like them, not the whole
      map. 0 turns it off.
    - ``prior``: strength of the L2 pull of the head's weights toward the base head's, in
      units of one point's weight, on standardised features (mean 0, mean squared norm 1
      over the cells of the annotated images); ``bias_prior``: the bias's pull, as a
      multiple of ``prior``.
    - ``seeds``: CAM seeds per class and annotated image drawn from the seed CAM, as the
      trainer draws them (0: none); ``seed_weight``: weight of one seed (and of a saved
      non-user point); ``sampler``: the seed sampler (:data:`~pixelcam.pseudo_labels.SAMPLERS`).
    - ``max_iter``, ``tol``: Newton iterations and the stopping step size.
    """

    point_weight: float = 1.0
    anchor: float = 20.0
    anchor_cells: int = 24
    prior: float = 0.1
    bias_prior: float = 10.0
    seeds: int = 0
    seed_weight: float = 0.1
    sampler: str = "probability"
    max_iter: int = 30
    tol: float = 1e-5

    def validated(self) -> RefitSettings:
        """These settings, checked (:class:`InputError` naming the bad value)."""
        for name in ("prior", "bias_prior"):
            _positive(getattr(self, name), name, strict=True)
        for name in ("point_weight", "seed_weight", "anchor", "tol"):
            _positive(getattr(self, name), name, strict=False)
        for name, low in (("seeds", 0), ("anchor_cells", 1), ("max_iter", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise InputError(f"refit setting {name} must be an integer >= {low}, got {v!r}")
        from pixelcam.pseudo_labels import SAMPLERS

        if self.sampler not in SAMPLERS:
            raise InputError(
                f"unknown seed sampler {self.sampler!r}; choose one of {SAMPLERS.choices()}"
            )
        return replace(self, sampler=SAMPLERS.canonical(self.sampler))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RefitSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown refit setting(s) {', '.join(unknown)}")
        return cls(**values).validated()


def _positive(value: Any, name: str, strict: bool) -> None:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value)) and (value > 0 if strict else value >= 0)
    if not ok:
        raise InputError(
            f"refit setting {name} must be a finite number {'>' if strict else '>='} 0, "
            f"got {value!r}"
        )


@dataclass
class RefitResult:
    """What :meth:`Refiner.refit` returns.

    ``head_state``: the new pixel head's state dict (CPU tensors, a copy); ``maps``: image
    id -> float32 foreground map in [0, 1] (the images asked for); ``seconds``: the refit
    (rows, solve, new head); ``map_seconds``: making ``maps``.
    """

    head_state: dict[str, torch.Tensor]
    maps: dict[str, np.ndarray]
    seconds: float
    map_seconds: float = 0.0
    n_fg: int = 0
    n_bg: int = 0
    n_seeds: int = 0
    iterations: int = 0
    converged: bool = True
    settings: RefitSettings = field(default_factory=RefitSettings)


# ----------------------------------------------------------------------------------------
# The pixel head: a fixed trunk and a refitted last 1x1 conv


def _split_head(head: nn.Module) -> tuple[nn.Module | None, nn.Conv2d, str]:
    """``(trunk or None, last 1x1 conv, its state-dict prefix)`` of a pixel head."""
    if isinstance(head, nn.Conv2d):
        trunk, last, prefix = None, head, ""
    elif isinstance(getattr(head, "conv", None), nn.Conv2d) and len(list(head.children())) == 1:
        trunk, last, prefix = None, head.conv, "conv."
    elif isinstance(getattr(head, "layers", None), nn.Sequential) and isinstance(
        head.layers[-1], nn.Conv2d
    ):
        trunk, last, prefix = head.layers[:-1], head.layers[-1], f"layers.{len(head.layers) - 1}."
    else:
        raise InputError(
            f"cannot refine a pixel head of type {type(head).__name__}: expected a 1x1 conv, "
            "a LinearPixelHead-like module (.conv) or an MLP ending in one (.layers)"
        )
    if last.out_channels != 2 or last.kernel_size != (1, 1) or last.bias is None:
        raise InputError(
            "the pixel head's last layer must be a 1x1 conv with 2 outputs and a bias, got "
            f"{last.out_channels} outputs, kernel {last.kernel_size}"
        )
    return trunk, last, prefix


class _FeatureCache:
    """Per-image feature maps on the CPU, least recently used evicted beyond a budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = int(budget_bytes)
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self._items.values())

    def get(self, key: str) -> torch.Tensor | None:
        t = self._items.get(key)
        if t is not None:
            self._items.move_to_end(key)
        return t

    def put(self, key: str, value: torch.Tensor) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > 1 and self.nbytes > self.budget:
            self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)

    def ids(self) -> list[str]:
        return list(self._items)


@dataclass
class _Image:
    """One image the refiner knows: its pixels, seed CAM, feature statistics and points."""

    image_id: str
    rgb: np.ndarray
    label: int | None
    train: bool
    cam: torch.Tensor | None
    feat_sum: torch.Tensor
    feat_sq: float
    cells: int
    points: AnnotationSet | None = None
    rows: torch.Tensor | None = None
    seed_rows: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict
    )
    anchors: tuple[Any, ...] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


@dataclass
class _Snapshot:
    """A head and what made it (for undo and for the saved checkpoint's record)."""

    state: dict[str, torch.Tensor]
    settings: RefitSettings | None
    points: dict[str, dict[str, int]]


@dataclass
class _Fixed:
    """The rows that stay from one refit to the next (CAM seeds: kind 1, anchors: kind 2)
    of the training images ``ids``, standardised (``z`` with the bias column), with the
    standardisation ``mu``/``sigma``, the image (``owner``) and feature-grid cell of each
    row, and their Gram matrix ``z diag(1/lam) z^T`` once a refit needed it."""

    key: tuple
    ids: list[str]
    mu: torch.Tensor
    sigma: float
    z: torch.Tensor
    y: torch.Tensor
    kind: torch.Tensor
    owner: torch.Tensor
    cells: torch.Tensor
    gram: torch.Tensor | None = None


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------------------
# The solver


def _objective(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, theta: torch.Tensor,
    theta0: torch.Tensor, lam: torch.Tensor,
) -> float:  # fmt: skip
    z = (x @ theta).double()
    ce = F.softplus(z) - y.double() * z  # -log p(y) of a logistic model
    prior = (lam.double() * (theta - theta0).double() ** 2).sum()
    return float((w.double() * ce).sum() + 0.5 * prior)


def _spd_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``matrix^-1 rhs`` for a symmetric positive definite ``matrix`` (Cholesky)."""
    chol, info = torch.linalg.cholesky_ex(matrix)
    if int(info) != 0:  # not numerically SPD: a general solve
        return torch.linalg.solve(matrix, rhs)
    return torch.cholesky_solve(rhs[:, None], chol)[:, 0]


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    theta0: torch.Tensor,
    lam: torch.Tensor,
    max_iter: int = 30,
    tol: float = 1e-5,
    start: torch.Tensor | None = None,
    kernel: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int, bool]:
    """Minimise ``sum_i w_i CE(sigmoid(x_i . theta), y_i) + 1/2 sum_j lam_j (theta -
    theta0)_j^2`` by damped Newton steps from ``start`` (default ``theta0``). ``x``
    ``[N, D]``, ``lam`` ``[D]`` > 0; float32, the objective summed in float64.

    With ``kernel`` (``x diag(1/lam) x^T``, e.g. partly cached) or ``N < D`` each step
    solves an ``N x N`` system (Woodbury), else a ``D x D`` one.
    Stops when no parameter moves by more than ``tol * max(1, max |theta|)``. Returns
    ``(theta, iterations, converged)``.
    """
    x, y, w = x.float(), y.float(), w.float()
    theta0, lam = theta0.float(), lam.float()
    theta = (theta0 if start is None else start.float()).clone()
    if x.shape[0] == 0:
        return theta0.clone(), 0, True
    inv_lam = 1.0 / lam
    if kernel is None and x.shape[0] < x.shape[1]:
        kernel = (x * inv_lam) @ x.T
    value = _objective(x, y, w, theta, theta0, lam)
    for it in range(1, int(max_iter) + 1):
        p = torch.sigmoid(x @ theta)
        grad = x.T @ (w * (p - y)) + lam * (theta - theta0)
        d = (w * p * (1 - p)).clamp_min(0.0)
        if kernel is not None:  # (Lam + X'DX)^-1 g by Woodbury: an N x N solve
            s = d.sqrt()
            u = inv_lam * grad
            inner = s[:, None] * kernel * s[None, :]
            inner.diagonal().add_(1.0)
            step = u - inv_lam * (x.T @ (s * _spd_solve(inner, s * (x @ u))))
        else:
            hess = (x.T * d) @ x
            hess.diagonal().add_(lam)
            step = _spd_solve(hess, grad)
        scale = 1.0
        while True:  # backtracking: never a step that raises the objective
            cand = theta - scale * step
            new_value = _objective(x, y, w, cand, theta0, lam)
            if new_value <= value + 1e-9 * abs(value) or scale < 1e-3:
                break
            scale *= 0.5
        theta, value = cand, new_value
        if float((scale * step).abs().max()) <= tol * max(1.0, float(theta.abs().max())):
            return theta, it, True
    return theta, int(max_iter), False


# ----------------------------------------------------------------------------------------
# The refiner


class Refiner:
    """Refits a model's pixel head from points on cached images (see the module docstring).

    Args:
        model: a :class:`~pixelcam.models.WSOLModel` (PixelCAM or baseline; not NEGEV/U-Net).
        device: where the encoder runs (default: where the model is); the refit and the
            maps run on the CPU from the cached features.
        size: model input side (default: the checkpoint's ``eval_size``, else 224).
        teacher: a baseline model whose CAM gives the seeds (default: the model itself).
        seed_method: the seed CAM (default: the first of :data:`SEED_METHODS` that applies).
        settings: default :class:`RefitSettings` of :meth:`refit`.
        cache_mb: memory budget of the feature cache.
        parent: the checkpoint the model came from (recorded by :meth:`save`).
        parent_meta: its meta (class names, eval size...).
        seed: seeds the CAM-seed draws (each image's draw depends on it and the image id).
        init_seeds: CAM seeds per class and image for a baseline's first head.
    """

    def __init__(
        self,
        model: WSOLModel,
        device: torch.device | str | None = None,
        *,
        size: int | None = None,
        teacher: WSOLModel | None = None,
        seed_method: str | None = None,
        settings: RefitSettings | None = None,
        cache_mb: float = 512.0,
        parent: str | Path | None = None,
        parent_meta: dict[str, Any] | None = None,
        seed: int = 0,
        init_seeds: int = 10,
    ) -> None:
        if not isinstance(model, WSOLModel):
            raise InputError(f"a Refiner needs a pixelcam model, got {type(model).__name__}")
        if model.config.get("decoder"):
            raise InputError(
                f"a {model.config['decoder']!r} checkpoint's map comes from its decoder; "
                "refine a PixelCAM or a baseline checkpoint"
            )
        _positive(cache_mb, "cache_mb", strict=True)
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else _device_of(model)
        self.parent_meta = dict(parent_meta or {})
        self.size = _input_size(size if size is not None else self.parent_meta.get("eval_size"))
        self.settings = (settings or RefitSettings()).validated()
        self.teacher = teacher.eval() if teacher is not None else None
        self.seed_method = _seed_method(self.teacher or model, seed_method)
        self.parent = Path(parent) if parent is not None else None
        self.seed = int(seed)
        self.init_seeds = int(init_seeds)
        self.had_pixel_head = model.pixel_head is not None
        if not self.had_pixel_head and self.seed_method is None:
            raise InputError("this model has no pixel head and no CAM to initialise one from")
        head = copy.deepcopy(model.pixel_head) if self.had_pixel_head else None
        if head is None:
            head = LinearPixelHead(model.feature_channels)
        self._head = head.to("cpu").float().eval().requires_grad_(False)
        self._trunk, self._last, self._prefix = _split_head(self._head)
        self._images: dict[str, _Image] = {}
        self._cache = _FeatureCache(int(cache_mb * 2**20))
        self._base: dict[str, torch.Tensor] | None = (
            _clone_state(self._head) if self.had_pixel_head else None
        )
        self._current = _Snapshot(_clone_state(self._head), None, {})
        self._history: list[_Snapshot] = []
        self._fixed_cache: _Fixed | None = None
        self._base_version = 0
        self.init_info: dict[str, Any] | None = None
        #: the teacher's checkpoint, when :meth:`from_checkpoint` loaded one (recorded)
        self.teacher_path: Path | None = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: torch.device | str = "cpu",
        *,
        teacher: str | Path | None = None,
        **kwargs: Any,
    ) -> Refiner:
        """A refiner for the checkpoint at ``path`` (``teacher``: a baseline checkpoint
        whose CAM gives the seeds); ``kwargs`` go to :class:`Refiner`."""
        from pixelcam.models import load_checkpoint

        model, meta = load_checkpoint(path, device=device)
        teacher_model = load_checkpoint(teacher, device=device)[0] if teacher else None
        refiner = cls(model, device, teacher=teacher_model, parent=path, parent_meta=meta, **kwargs)
        refiner.teacher_path = Path(teacher) if teacher else None
        return refiner

    # -- images --------------------------------------------------------------------------
    @property
    def image_ids(self) -> list[str]:
        """The images added, in order."""
        return list(self._images)

    @property
    def cache_bytes(self) -> int:
        """Bytes the cached feature maps take now."""
        return self._cache.nbytes

    def add_image(
        self, image_id: str, image: Any, *, label: int | None = None, train: bool = True
    ) -> None:
        """Compute and cache the features (and the seed CAM) of one image.

        ``image``: any 2-D image array (:func:`pixelcam.inference.prepare_image`);
        ``label``: its class, if known (the seed CAM explains it; default: the predicted
        class); ``train=False``: an image only shown (maps), never learnt from. Adding an
        id again replaces the image and forgets its points.
        """
        from pixelcam.inference import prepare_image

        if not isinstance(image_id, str) or not image_id:
            raise InputError(f"image_id must be a non-empty string, got {image_id!r}")
        rgb = prepare_image(image, name=f"image {image_id!r}")
        need_cam = bool(train) and self.seed_method is not None
        feats, cam = self._encode(rgb, label, need_cam)
        flat = feats[0].flatten(1).double()  # [K, h*w]
        self._images[image_id] = _Image(
            image_id=image_id, rgb=rgb, label=label, train=bool(train),
            cam=None if cam is None else cam.half(), feat_sum=flat.sum(dim=1),
            feat_sq=float((flat**2).sum()), cells=int(flat.shape[1]),
        )  # fmt: skip
        self._cache.put(image_id, self._compact(feats))
        self._fixed_cache = None

    def remove_image(self, image_id: str) -> None:
        """Forget an image, its features and its points."""
        self._image(image_id)
        del self._images[image_id]
        self._cache.drop(image_id)
        self._fixed_cache = None

    def _image(self, image_id: str, train: bool = False) -> _Image:
        img = self._images.get(image_id)
        if img is None:
            raise InputError(f"unknown image {image_id!r}: add_image it first")
        if train and not img.train:
            raise InputError(f"image {image_id!r} was added with train=False: no points on it")
        return img

    def _encode(
        self, rgb: np.ndarray, label: int | None, need_cam: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Head-input features ``[1, K, h, w]`` (CPU float32) and the seed CAM ``[S, S]``."""
        from pixelcam.cams import compute_maps
        from pixelcam.data.transforms import preprocess_batch

        x = preprocess_batch(rgb, self.size).to(self.device)
        cam = None
        source = self.teacher or self.model
        if need_cam:
            res = compute_maps(source, x, [self.seed_method], target=label, size=(self.size,) * 2)
            cam = res.maps[self.seed_method][0].float().cpu()
        if need_cam and source is self.model:
            feats = res.features
        else:
            with torch.inference_mode():
                feats = self.model.forward_features(x)[0]
        feats = feats.detach().float().cpu().clone()
        if self._trunk is not None:
            with torch.inference_mode():
                feats = self._trunk(feats).clone()
        return feats, cam

    def _compact(self, feats: torch.Tensor) -> torch.Tensor:
        """float16 when that changes the current map by less than FP16_TOLERANCE."""
        half = feats.half()
        if not bool(torch.isfinite(half).all()):
            return feats
        if self._base is None:  # no head yet: checked again once it is fitted
            return feats
        diff = (self._probs(feats) - self._probs(half.float())).abs().max()
        return half if float(diff) <= FP16_TOLERANCE else feats

    def _features(self, image_id: str) -> torch.Tensor:
        """The cached features (recomputed when evicted), float32."""
        cached = self._cache.get(image_id)
        if cached is None:
            img = self._image(image_id)
            cached = self._compact(self._encode(img.rgb, img.label, False)[0])
            self._cache.put(image_id, cached)
        return cached.float()

    # -- points --------------------------------------------------------------------------
    def set_points(
        self,
        image_id: str,
        points: AnnotationSet | Any,
        labels: Any = None,
        sources: str | Sequence[str] = USER_SOURCE,
    ) -> AnnotationSet:
        """Replace the points of an image: an :class:`~pixelcam.annotations.AnnotationSet`
        (its ``image_shape`` must be the image's) or ``(N, 2)`` ``(row, col)`` coordinates
        in image pixels with ``labels`` (1 foreground, 0 background). Points outside the
        image or with another label raise :class:`InputError`. Returns the validated set.
        """
        img = self._image(image_id, train=True)
        if isinstance(points, AnnotationSet):
            if tuple(points.image_shape) != img.shape:
                raise InputError(
                    f"points for {image_id!r} were made on a {points.image_shape[0]}x"
                    f"{points.image_shape[1]} (HxW) image, but the image is {img.shape[0]}x"
                    f"{img.shape[1]}"
                )
            coords, labels, sources = points.coords(), points.labels(), points.sources()
            image_path = points.image_path
        else:
            if labels is None:
                raise InputError(f"points for {image_id!r} need their labels (1 FG, 0 BG)")
            coords, image_path = points, None
        ann = AnnotationSet.from_arrays(image_id, img.shape, coords, labels, sources, image_path)
        img.points = ann
        img.rows = self._sample(image_id, ann.coords()) if ann.points else None
        return ann

    def clear_points(self, image_id: str | None = None) -> None:
        """Forget the points of one image (or of all)."""
        for img in [self._image(image_id)] if image_id else self._images.values():
            img.points, img.rows = None, None

    def points(self, image_id: str) -> AnnotationSet | None:
        return self._image(image_id).points

    def _sample(self, image_id: str, coords: np.ndarray, shape: tuple[int, int] | None = None):
        """Features at ``(row, col)`` positions (pixels of an image of ``shape``, default
        the image's), by bilinear sampling as the map is upsampled: ``[N, K]`` float32."""
        h, w = shape or self._image(image_id).shape
        feats = self._features(image_id)
        c = torch.as_tensor(coords, dtype=torch.float32).reshape(-1, 2)
        gy = (c[:, 0] + 0.5) / h * 2 - 1
        gx = (c[:, 1] + 0.5) / w * 2 - 1
        grid = torch.stack([gx, gy], dim=1)[None, None]  # [1, 1, N, 2] as (x, y)
        out = F.grid_sample(
            feats, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out[0, :, 0].T.contiguous()

    def _seed_rows(self, img: _Image, n: int, sampler: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The CAM seeds of one image (fixed for a given refiner seed): rows and labels."""
        key = (n, sampler)
        if key not in img.seed_rows:
            from pixelcam.pseudo_labels import sample_points

            draw = self._draw_seed(img.image_id)
            coords, labels = sample_points(img.cam.float(), n=n, sampler=sampler, seed=draw)
            rows = self._sample(img.image_id, coords.numpy(), shape=(self.size, self.size))
            img.seed_rows[key] = (rows, labels.float())
        return img.seed_rows[key]

    def _anchor_rows(self, img: _Image, limit: int) -> tuple[torch.Tensor, ...]:
        """Up to ``limit`` feature cells of an image (all, or a fixed random subset): their
        features, the base head's foreground probability there (the map the refit keeps)
        and their ``(row, col)`` on the feature grid."""
        version = (limit, self._base_version)
        if img.anchors is None or img.anchors[4] != version:
            feats = self._features(img.image_id)[0]  # [K, h, w]
            width = feats.shape[-1]
            idx = torch.arange(img.cells)
            if img.cells > limit:
                gen = torch.Generator().manual_seed(self._draw_seed(img.image_id))
                idx = torch.randperm(img.cells, generator=gen)[:limit].sort().values
            rows = feats.flatten(1)[:, idx].T.contiguous()
            wkey, bkey = self._prefix + "weight", self._prefix + "bias"
            w, b = self._base[wkey][:, :, 0, 0], self._base[bkey]
            target = torch.softmax(rows @ w.T + b, dim=1)[:, 1]
            cells = torch.stack([idx // width, idx % width], dim=1).float()
            img.anchors = (rows, target, cells, tuple(feats.shape[-2:]), version)
        return img.anchors

    def _draw_seed(self, image_id: str) -> int:
        return zlib.crc32(image_id.encode()) ^ (self.seed * 0x9E3779B1 & 0xFFFFFFFF)

    def _point_rows(self, s: RefitSettings, none: bool = False) -> tuple[Any, ...]:
        """The points of every training image (``none``: no point, for a baseline's first
        head): rows ``[Np, K]``, labels, weights (user points balanced: each class gets half
        of their total weight; other sources ``seed_weight``), the user's foreground and
        background counts and the number of other points."""
        parts = []
        for img in self._images.values():
            if img.train and img.rows is not None and not none:
                user = torch.tensor([src == USER_SOURCE for src in img.points.sources()])
                parts.append((img.rows, torch.as_tensor(img.points.labels()).float(), user))
        if not parts:
            empty = torch.zeros(0)
            return torch.zeros(0, self._last.in_channels), empty, empty, 0, 0, 0
        x, y, user = (torch.cat(t) for t in zip(*parts))
        n_fg, n_bg = int((user & (y == 1)).sum()), int((user & (y == 0)).sum())
        w = torch.where(user, float(s.point_weight), float(s.seed_weight))
        if n_fg and n_bg:
            w[user & (y == 1)] *= (n_fg + n_bg) / (2 * n_fg)
            w[user & (y == 0)] *= (n_fg + n_bg) / (2 * n_bg)
        return x, y, w, n_fg, n_bg, int((~user).sum())

    def _fixed(self, s: RefitSettings, seeds: int, anchors: bool) -> _Fixed:
        """The CAM seeds and anchors of the training images, standardised (cached until
        the images, the seed draw, the anchors or the prior change)."""
        ids = [i.image_id for i in self._images.values() if i.train]
        anchors = anchors and s.anchor > 0
        key = (tuple(ids), seeds, s.sampler, anchors, s.anchor_cells, s.prior, s.bias_prior,
               self._base_version)  # fmt: skip
        if self._fixed_cache is not None and self._fixed_cache.key == key:
            return self._fixed_cache
        mu, sigma = self._standardizer()
        parts = []  # (rows, targets, kind, feature-grid cells) per image and source
        for n, image_id in enumerate(ids):
            img = self._images[image_id]
            if seeds > 0 and img.cam is not None:
                r, lab = self._seed_rows(img, seeds, s.sampler)
                parts.append((n, r, lab, 1, torch.full((len(r), 2), -9.0)))
            if anchors:
                r, target, where, _, _ = self._anchor_rows(img, s.anchor_cells)
                parts.append((n, r, target, 2, where))
        rows = [p[1] for p in parts]
        ys = [p[2] for p in parts]
        kinds = [torch.full((len(p[1]),), p[3], dtype=torch.int8) for p in parts]
        owners = [torch.full((len(p[1]),), p[0], dtype=torch.long) for p in parts]
        cells = [p[4] for p in parts]
        k = self._last.in_channels
        x = torch.cat(rows) if rows else torch.zeros(0, k)
        fixed = _Fixed(
            key=key, ids=ids, mu=mu, sigma=sigma, z=self._standardize(x, mu, sigma),
            y=torch.cat(ys) if ys else torch.zeros(0),
            kind=torch.cat(kinds) if kinds else torch.zeros(0, dtype=torch.int8),
            owner=torch.cat(owners) if owners else torch.zeros(0, dtype=torch.long),
            cells=torch.cat(cells) if cells else torch.zeros(0, 2),
        )  # fmt: skip
        self._fixed_cache = fixed
        return fixed

    @staticmethod
    def _standardize(x: torch.Tensor, mu: torch.Tensor, sigma: float) -> torch.Tensor:
        """``[(x - mu) / sigma, 1]``: standardised rows with the bias column (float32)."""
        z = (x.float() - mu.float()) / float(sigma)
        return torch.cat([z, torch.ones(len(z), 1)], dim=1)

    def _fixed_weights(self, s: RefitSettings, fixed: _Fixed) -> torch.Tensor:
        """Seeds weigh ``seed_weight``; an image's anchors share ``anchor``, except the
        cells a user point of that image is sampled from (the 2 x 2 cells around it): there
        the old map is what the user corrected."""
        w = torch.where(fixed.kind == 1, float(s.seed_weight), 0.0)
        is_anchor = fixed.kind == 2
        for n, image_id in enumerate(fixed.ids):
            mine = is_anchor & (fixed.owner == n)
            count = int(mine.sum())
            if count == 0:
                continue
            w[mine] = float(s.anchor) / count
            img = self._images[image_id]
            if img.points is None or not img.points.points:
                continue
            user = [i for i, src in enumerate(img.points.sources()) if src == USER_SOURCE]
            coords = torch.as_tensor(img.points.coords()[user], dtype=torch.float32)
            h, wd = img.anchors[3]
            fy = (coords[:, 0] + 0.5) * h / img.shape[0] - 0.5
            fx = (coords[:, 1] + 0.5) * wd / img.shape[1] - 0.5
            cells = fixed.cells[mine]
            near = ((cells[:, None, 0] - fy).abs() < 1) & ((cells[:, None, 1] - fx).abs() < 1)
            sub = w[mine]
            sub[near.any(dim=1)] = 0.0
            w[mine] = sub
        return w

    # -- the head ------------------------------------------------------------------------
    def _standardizer(self) -> tuple[torch.Tensor, float]:
        """Mean feature and RMS distance to it over the cells of the training images."""
        imgs = [i for i in self._images.values() if i.train] or list(self._images.values())
        if not imgs:
            return torch.zeros(self._last.in_channels, dtype=torch.float64), 1.0
        n = sum(i.cells for i in imgs)
        mu = sum(i.feat_sum for i in imgs) / n
        var = sum(i.feat_sq for i in imgs) / n - float((mu**2).sum())
        return mu, math.sqrt(var) if var > 1e-12 else 1.0

    def _theta(self, state: dict[str, torch.Tensor], mu: torch.Tensor, sigma: float):
        """A head state as the standardised logistic parameters ``[v, a]`` (float32)."""
        w = state[self._prefix + "weight"].double()[:, :, 0, 0]
        b = state[self._prefix + "bias"].double()
        d, c = w[1] - w[0], b[1] - b[0]
        return torch.cat([d * sigma, (c + d @ mu).reshape(1)]).float()

    def _state(self, theta: torch.Tensor, mu: torch.Tensor, sigma: float):
        """The head state whose foreground logit is ``theta``: the base head moved by half
        the change on each output channel (the least change giving that difference)."""
        assert self._base is not None
        theta = theta.double()
        d = theta[:-1] / sigma
        c = theta[-1] - d @ mu
        state = {k: v.clone() for k, v in self._base.items()}
        wkey, bkey = self._prefix + "weight", self._prefix + "bias"
        w0, b0 = state[wkey].double(), state[bkey].double()
        dd = d - (w0[1, :, 0, 0] - w0[0, :, 0, 0])
        dc = c - (b0[1] - b0[0])
        sign = torch.tensor([-0.5, 0.5], dtype=torch.float64)
        state[wkey] = (w0 + sign[:, None, None, None] * dd[None, :, None, None]).float()
        state[bkey] = (b0 + sign * dc).float()
        return state

    def _solve(self, s: RefitSettings, seeds: int, base: bool = False) -> tuple[Any, ...]:
        """Fit the head; returns ``(state, iterations, converged, n_fg, n_bg, n_seeds)``."""
        xp, yp, wp, n_fg, n_bg, n_other = self._point_rows(s, none=base)
        fixed = self._fixed(s, seeds, anchors=not base)
        n_seeds = n_other + int((fixed.kind == 1).sum())
        if n_fg + n_bg + n_seeds == 0 and not base:  # nothing new: the base head, exactly
            return {k: v.clone() for k, v in self._base.items()}, 0, True, 0, 0, 0
        zp = self._standardize(xp, fixed.mu, fixed.sigma)
        z, y = torch.cat([zp, fixed.z]), torch.cat([yp, fixed.y])
        w = torch.cat([wp, self._fixed_weights(s, fixed)])
        if len(z) > MAX_ROWS:
            raise InputError(f"{len(z)} points, seeds and anchors: more than the limit {MAX_ROWS}")
        k = z.shape[1]
        lam = torch.full((k,), float(s.prior))
        if base:  # a baseline's first head: from zero, the bias as free as the weights
            theta0, start = torch.zeros(k), None
        else:  # from the current head: the same optimum, fewer steps
            theta0 = self._theta(self._base, fixed.mu, fixed.sigma)
            start = self._theta(self._current.state, fixed.mu, fixed.sigma)
            lam[-1] *= float(s.bias_prior)
        kernel = None
        if len(z) <= 2 * k:  # the dual (Woodbury) form, with the fixed rows' Gram cached
            if fixed.gram is None:
                fixed.gram = (fixed.z / lam) @ fixed.z.T
            zl = zp / lam
            cross = zl @ fixed.z.T
            kernel = torch.cat([torch.cat([zl @ zp.T, cross], 1),
                                torch.cat([cross.T, fixed.gram], 1)])  # fmt: skip
        theta, iters, ok = fit_logistic(z, y, w, theta0, lam, s.max_iter, s.tol, start, kernel)
        return self._state(theta, fixed.mu, fixed.sigma), iters, ok, n_fg, n_bg, n_seeds

    def _ensure_base(self, s: RefitSettings) -> None:
        """A baseline's first head, fitted from the CAM seeds of the training images."""
        if self._base is not None:
            return
        train = [i for i in self._images.values() if i.train and i.cam is not None]
        if not train:
            raise InputError(
                "this model has no pixel head: add at least one image (train=True) first, its "
                "CAM seeds give the first head"
            )
        n = s.seeds or self.init_seeds
        self._base = _clone_state(self._head)  # the reference the new state is written from
        try:
            state, iters, ok, _, _, n_seeds = self._solve(replace(s, seeds=n), n, base=True)
        except BaseException:
            self._base = None
            raise
        self._head.load_state_dict(state)
        self._base = _clone_state(self._head)
        self._base_version += 1
        self._current = _Snapshot(_clone_state(self._head), None, {})
        self.init_info = {
            "method": self.seed_method, "seeds_per_class": n, "seeds": n_seeds,
            "images": [i.image_id for i in train], "prior": s.prior, "iterations": iters,
        }  # fmt: skip
        for image_id in self._cache.ids():  # float16 wherever the new maps allow it
            self._cache.put(image_id, self._compact(self._cache.get(image_id).float()))

    def refit(
        self,
        settings: RefitSettings | None = None,
        *,
        maps: Iterable[str] | None = None,
        map_size: int | tuple[int, int] | None = None,
        **overrides: Any,
    ) -> RefitResult:
        """Refit the head from every image's points (and seeds), push the old head on the
        undo stack, and return the new head with the ``maps`` of the given image ids
        (default: all images; ``[]``: none) at ``map_size`` (default: each image's size).
        ``overrides`` replace fields of ``settings`` (default :attr:`settings`)."""
        s = settings or self.settings
        if overrides:
            try:
                s = replace(s, **overrides)
            except TypeError as exc:
                raise InputError(f"unknown refit setting: {exc}") from exc
        s = s.validated()
        start = time.perf_counter()
        self._ensure_base(s)
        state, iters, ok, n_fg, n_bg, n_seeds = self._solve(s, s.seeds)
        self._history.append(self._current)
        self._head.load_state_dict(state)
        self._current = _Snapshot(_clone_state(self._head), s, self._point_counts())
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        out = self.maps(maps, size=map_size)
        return RefitResult(
            head_state=_clone_state(self._head), maps=out, seconds=seconds,
            map_seconds=time.perf_counter() - start, n_fg=n_fg, n_bg=n_bg, n_seeds=n_seeds,
            iterations=iters, converged=ok, settings=s,
        )  # fmt: skip

    def _point_counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for img in self._images.values():
            if img.points is not None and img.points.points:
                labels = img.points.labels()
                out[img.image_id] = {"fg": int(labels.sum()), "bg": int((labels == 0).sum())}
        return out

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def undo(self) -> dict[str, torch.Tensor]:
        """Restore the previous head exactly; returns its state. The points stay as they
        are (the panel owns them)."""
        if not self._history:
            raise InputError("nothing to undo: this is the starting head")
        self._current = self._history.pop()
        self._head.load_state_dict(self._current.state)
        return self.head_state()

    def head_state(self) -> dict[str, torch.Tensor]:
        """A copy of the current pixel head's state dict."""
        return _clone_state(self._head)

    # -- maps ----------------------------------------------------------------------------
    def _probs(self, feats: torch.Tensor) -> torch.Tensor:
        """Foreground probability ``[h, w]`` of the current head on cached features."""
        logits = F.conv2d(feats.float(), self._last.weight, self._last.bias)
        return torch.softmax(logits, dim=1)[0, 1]

    def maps(
        self, image_ids: Iterable[str] | None = None, size: int | tuple[int, int] | None = None
    ) -> dict[str, np.ndarray]:
        """Foreground maps of the current head, float32 in [0, 1], upsampled bilinearly
        (as PixelCAM's map is) to ``size`` (default: each image's own size)."""
        if self._base is None:
            self._ensure_base(self.settings)
        ids = list(self._images) if image_ids is None else list(image_ids)
        out = {}
        with torch.no_grad():
            for image_id in ids:
                self._image(image_id)
                shape = self._images[image_id].shape if size is None else _pair(size)
                p = torch.nan_to_num(self._probs(self._features(image_id)), nan=0.0)
                if tuple(p.shape) != shape:
                    p = F.interpolate(p[None, None], size=shape, mode="bilinear",
                                      align_corners=False)[0, 0]  # fmt: skip
                out[image_id] = p.clamp_(0.0, 1.0).numpy().astype(np.float32, copy=False)
        return out

    # -- the refined model ---------------------------------------------------------------
    def refined_model(self) -> WSOLModel:
        """The model with the current head (its backbone and image head shared, not
        copied): gives the same maps as :meth:`maps` through ``predict_maps``."""
        if self._base is None:
            self._ensure_base(self.settings)
        cfg = dict(self.model.config)
        cfg["pixel_head"] = cfg.get("pixel_head") or "linear"
        head = copy.deepcopy(self._head).to(_device_of(self.model))
        model = WSOLModel(self.model.backbone, self.model.head, head, cfg)
        model.weights_report = self.model.weights_report
        return model.eval()

    def record(self, annotations: Sequence[str | Path] = ()) -> dict[str, Any]:
        """What :meth:`save` writes under ``meta["refine"]``."""
        parent = None
        if self.parent is not None:
            from pixelcam.models.checkpoint import checkpoint_paths

            weights, json_path = checkpoint_paths(self.parent)
            parent = {
                "checkpoint": str(json_path), "weights": str(weights),
                "sha256": file_sha256(weights) if weights.is_file() else None,
                "phase": self.parent_meta.get("phase"),
                "metrics": self.parent_meta.get("metrics"),
            }  # fmt: skip
        files = []
        for a in annotations:
            p = Path(a)
            files.append({"path": str(p), "sha256": file_sha256(p) if p.is_file() else None})
        teacher = None
        if self.teacher is not None:
            teacher = {"checkpoint": str(self.teacher_path) if self.teacher_path else None}
        s = self._current.settings
        return {
            "parent": parent, "annotations": files,
            "settings": None if s is None else s.to_dict(),
            "points": self._current.points, "input_size": self.size,
            "seed_method": self.seed_method, "seed_model": teacher, "seed": self.seed,
            "initialised_from_seeds": self.init_info, "refits": len(self._history),
            "method": "pixel head refit: weighted logistic regression + L2 prior (Newton)",
        }  # fmt: skip

    def save(
        self,
        path: str | Path,
        annotations: Sequence[str | Path] = (),
        meta: dict[str, Any] | None = None,
    ) -> tuple[Path, Path]:
        """Save the refined model as a normal checkpoint (same backbone weights, the new
        head): its meta keeps the parent's class names and input size and records, under
        ``"refine"``, the parent (path and SHA-256 of its ``.safetensors``), the annotation
        files (path and SHA-256), the settings and the point counts per image."""
        from pixelcam.models import save_checkpoint

        drop = ("metrics", "epoch", "versions", "refine")
        doc = {k: v for k, v in self.parent_meta.items() if k not in drop}
        doc.update(phase="refine", map_method="pixelcam", eval_size=self.size)
        doc["refine"] = self.record(annotations)
        doc.update(meta or {})
        return save_checkpoint(self.refined_model(), path, doc)


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _input_size(size: Any) -> int:
    if size is None:
        return 224
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 8192:
        raise InputError(f"the model input size must be an integer in 16..8192, got {size!r}")
    return int(size)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return int(size), int(size)
    try:
        h, w = (int(v) for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"a map size must be an int or (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"a map size must be positive, got {size!r}")
    return h, w


def _seed_method(model: WSOLModel, name: str | None) -> str | None:
    """The baseline CAM the seeds come from: ``name``, or the first that applies."""
    from pixelcam.cams import MAP_METHODS, get_method

    if name is not None:
        name = MAP_METHODS.canonical(name)
        if name == "pixelcam" or not get_method(name).applies(model):
            raise InputError(f"seed method {name!r} does not apply to this model")
        return name
    for cand in SEED_METHODS:
        if cand in MAP_METHODS and get_method(cand).applies(model):
            return cand
    return None


# ----------------------------------------------------------------------------------------
# Files: what ``pixelcam refine`` runs


@dataclass
class RefineSummary:
    """What :func:`refine_files` did."""

    weights: Path
    json: Path
    images: dict[str, Path]
    result: RefitResult


def load_point_files(items: Iterable[str | Path]) -> list[tuple[AnnotationSet, Path]]:
    """The annotation sets of files and folders (searched recursively for
    ``*.points.csv|json``), each with its file; an image annotated twice is refused."""
    from pixelcam.annotations import load_annotations

    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for s in ANNOTATION_SUFFIXES for q in p.rglob(f"*{s}") if q.is_file())
            if not found:
                raise InputError(f"no *.points.csv or *.points.json files in {p}")
            files += [q for q in found if q not in files]
        elif p.is_file():
            files += [p] if p not in files else []
        else:
            raise InputError(f"annotation file or folder does not exist: {p}")
    sets: list[tuple[AnnotationSet, Path]] = []
    seen: dict[str, Path] = {}
    for f in files:
        loaded = load_annotations(f)
        for ann in loaded if isinstance(loaded, list) else [loaded]:
            if ann.image_id in seen:
                raise InputError(f"two annotation sets for {ann.image_id!r}: {seen[ann.image_id]} "
                                 f"and {f}")  # fmt: skip
            seen[ann.image_id] = f
            sets.append((ann, f))
    return sets


def _base_name(text: str) -> str:
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_image_for(ann: AnnotationSet, file: Path, images: str | Path | None = None) -> Path:
    """The image a points file belongs to.

    With ``images`` (a folder, searched recursively): the one image whose name (without
    extension) is the set's ``image_id`` base name or its recorded ``image_path``'s.
    Otherwise: the recorded ``image_path`` (relative paths from the points file's folder),
    else an image beside the points file named like it (``<image>.points.csv``).
    """
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise InputError(f"--images must be a folder, got {folder}")
        names = {_base_name(ann.image_id)}
        if ann.image_path:
            names.add(_base_name(ann.image_path))
        hits = sorted(
            p for p in folder.rglob("*")
            if p.suffix.lower() in _IMAGE_SUFFIXES and p.stem in names and p.is_file()
        )  # fmt: skip
        if len(hits) != 1:
            listed = ", ".join(map(str, hits[:3]))
            what = f"{len(hits)} images ({listed})" if hits else "no image"
            raise InputError(f"{what} named {' or '.join(sorted(names))} in {folder} for {file}")
        return hits[0]
    tried = []
    if ann.image_path:
        p = Path(ann.image_path)
        p = p if p.is_absolute() else file.parent / p
        tried.append(str(p))
        if p.is_file():
            return p
    stem = file.name
    for suffix in (".csv", ".json", ".points"):
        stem = stem.removesuffix(suffix)
    for suffix in _IMAGE_SUFFIXES:
        p = file.parent / f"{stem}{suffix}"
        if p.is_file():
            return p
    tried.append(str(file.parent / f"{stem}.<png|bmp|jpg|tif>"))
    raise InputError(
        f"cannot find the image of {file} (tried {', '.join(tried)}); give --images FOLDER"
    )


def refine_files(
    checkpoint: str | Path,
    annotations: Sequence[str | Path],
    out: str | Path,
    *,
    images: str | Path | None = None,
    device: str | torch.device = "cpu",
    teacher: str | Path | None = None,
    settings: RefitSettings | None = None,
    size: int | None = None,
) -> RefineSummary:
    """Refit ``checkpoint``'s pixel head from saved points files and save the result as
    the checkpoint ``out`` (``pixelcam refine``). Images: see :func:`find_image_for`."""
    from pixelcam.data.io import read_image

    sets = load_point_files(annotations)
    if not sets:
        raise InputError("no annotation sets in " + ", ".join(map(str, annotations)))
    found = {ann.image_id: find_image_for(ann, f, images) for ann, f in sets}
    refiner = Refiner.from_checkpoint(checkpoint, device, teacher=teacher, settings=settings,
                                      size=size)  # fmt: skip
    for ann, _ in sets:
        refiner.add_image(ann.image_id, read_image(found[ann.image_id]))
        refiner.set_points(ann.image_id, ann)
    result = refiner.refit(maps=[])
    files = sorted({str(f) for _, f in sets})
    weights, json_path = refiner.save(out, annotations=files)
    return RefineSummary(weights, json_path, found, result)
