"""Seeded synthetic H&E-like colon tiles with exact gland masks, for tests and demos.

Two classes, as in GlaS: **benign** (label 0: regular round glands with one ordered basal
layer of small nuclei, goblet cells and an open pale lumen) and **malignant** (label 1:
irregular, crowded, sometimes fused glands, stratified enlarged dark nuclei, a lumen filled
with necrotic debris or a cribriform pattern of punched-out holes). The mask is the whole
gland object (epithelium + lumen), 1 = foreground.

The stroma (fibre-like eosin texture, lymphocytes, fibroblasts), the per-tile stain
variation and the pixel noise come from RNG streams seeded by ``seed`` ONLY, never by the
label, and are drawn with the same generator and parameters for both classes: for a given
seed, the stroma is pixel-identical in a benign and a malignant tile (except where glands
cover it, and within the 3 px reach of the final blur). The class can therefore only be
read from the masked region, so a weakly supervised model has a real localization problem.
Gland coverage targets are drawn from the same distribution (18-50 % of the tile, reached
within +4 %) for both classes, so area alone does not give the class away either.

Colours come from concentration maps of hematoxylin and eosin mixed with a Beer-Lambert
(HED-like) model, ``rgb = 255 * exp(-(H * h + E * e + od0))``; the ``stain`` argument picks
the optical-density vectors (:data:`STAINS`), so one can train on ``"he"`` and test on
``"he-dark"`` or ``"ihc"`` (hematoxylin + a DAB-like brown instead of eosin).

Features are drawn at a fixed pixel scale (glands of radius ~30-60 px, nuclei ~3-7 px, as
at roughly 10-20x) for tiles of 192 px and more; smaller tiles shrink every length so that
they still hold a few glands. Everything is vectorised numpy/scipy (no per-pixel Python
loop): a 512x512 tile takes ~50-70 ms on one CPU core (``benchmarks/synthetic_speed.py``).
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from pixelcam.errors import InputError

__all__ = [
    "CLASS_NAMES",
    "STAINS",
    "generate_tile",
    "write_synthetic_dataset",
]

#: Class names in label order (benign = 0, malignant = 1).
CLASS_NAMES: tuple[str, str] = ("benign", "malignant")

# Independent RNG streams: the label enters ONLY the gland stream.
_STREAM_STROMA = 0x5157
_STREAM_GLAND = 0x61A2
_STREAM_NOISE = 0x0153
_STREAM_SPLITS = 0x5B17

_MIN_SIDE = 16
_FULL_SCALE_SIDE = 192.0
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class _Palette:
    """Optical densities per unit concentration (R, G, B) of the two stains."""

    h: tuple[float, float, float]
    e: tuple[float, float, float]
    od0: tuple[float, float, float]  # slide/background density


# Stain palettes: optical densities (R, G, B) per unit of each dye.
_PALETTES: dict[str, _Palette] = {
    # Hematoxylin purple-blue, eosin pink-magenta (close to GlaS colours).
    "he": _Palette(h=(0.62, 0.80, 0.30), e=(0.10, 0.92, 0.26), od0=(0.02, 0.03, 0.02)),
    # Over-stained, bluer hematoxylin and a deeper, redder eosin: a darker slide.
    "he-dark": _Palette(h=(1.00, 1.02, 0.42), e=(0.16, 1.10, 0.50), od0=(0.05, 0.07, 0.05)),
    # IHC-like: hematoxylin counterstain and a DAB-like brown where eosin would be.
    "ihc": _Palette(h=(0.55, 0.50, 0.24), e=(0.18, 0.38, 0.62), od0=(0.02, 0.02, 0.03)),
}
#: Stain palettes accepted by ``generate_tile`` (optical-density vectors above).
STAINS: tuple[str, ...] = tuple(_PALETTES)


# --------------------------------------------------------------------------- helpers
def _check_label(label: object) -> int:
    if isinstance(label, bool) or not isinstance(label, numbers.Integral) or label not in (0, 1):
        raise InputError(f"label must be 0 (benign) or 1 (malignant), got {label!r}")
    return int(label)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_size(size: object) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)
    ):
        hw = (int(size[0]), int(size[1]))
    else:
        raise InputError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    if min(hw) < _MIN_SIDE:
        raise InputError(f"size must be at least {_MIN_SIDE} px per side, got {size!r}")
    return hw


def _check_stain(stain: object) -> _Palette:
    if not isinstance(stain, str) or stain not in _PALETTES:
        raise InputError(f"unknown stain {stain!r}; choose one of {', '.join(STAINS)}")
    return _PALETTES[stain]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, std ~1 (analytic, no extra pass). Large sigmas are
    filtered on a grid ``f`` times coarser and linearly interpolated back (nearest repeat,
    then an ``f``-wide box filter)."""
    f = max(1, int(sigma // 1.25))
    small = (shape[0] // f + 2, shape[1] // f + 2)
    s = sigma / f
    n = ndi.gaussian_filter(rng.standard_normal(small, dtype=np.float32), s, mode="wrap")
    n *= np.float32(2.0 * np.sqrt(np.pi) * max(s, 0.6))  # 1 / std of 2-D filtered noise
    if f > 1:
        n = ndi.uniform_filter(n.repeat(f, 0).repeat(f, 1), f, mode="wrap")
    return n[: shape[0], : shape[1]]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class _Nuclei:
    """Elliptical objects: centres, semi-axes (``a`` along ``ang``), darkness, kind code."""

    y: np.ndarray
    x: np.ndarray
    a: np.ndarray
    b: np.ndarray
    ang: np.ndarray
    dark: np.ndarray
    kind: np.ndarray

    @staticmethod
    def concat(parts: list[_Nuclei]) -> _Nuclei:
        names = ("y", "x", "a", "b", "ang", "dark")
        if not parts:
            return _Nuclei(*(np.zeros(0, np.float32) for _ in names), np.zeros(0, np.int8))
        cols = [np.concatenate([getattr(p, f) for p in parts]).astype(np.float32) for f in names]
        return _Nuclei(*cols, np.concatenate([p.kind for p in parts]).astype(np.int8))


@dataclass
class _Raster:
    """Rasterised objects near their centres: flat pixel indices, owner, cover and radius."""

    flat: np.ndarray
    owner: np.ndarray
    cover: np.ndarray  # soft coverage in [0, 1]
    r: np.ndarray  # normalised elliptical radius (1 on the rim)


def _render(shape: tuple[int, int], nuc: _Nuclei) -> _Raster:
    """Rasterise all ellipses at once: every object is evaluated over a small window around
    its centre (objects grouped by window size), and where objects overlap the pixel goes
    to the one it lies deepest in (smallest normalised radius)."""
    h, w = shape
    b = np.maximum(nuc.b, 0.5)
    rad = np.ceil(nuc.a * (1.0 + 0.45 / b) + 1.0).astype(np.intp)  # reach of the soft rim
    flats, owners, rs = [], [], []
    for wr in np.unique(rad):
        sel = np.flatnonzero(rad == wr)
        oy, ox = np.mgrid[-wr : wr + 1, -wr : wr + 1].reshape(2, 1, -1)
        ry, rx = np.rint(nuc.y[sel]), np.rint(nuc.x[sel])
        py = ry.astype(np.intp)[:, None] + oy
        px = rx.astype(np.intp)[:, None] + ox
        dy = (ry - nuc.y[sel])[:, None] + oy.astype(np.float32)
        dx = (rx - nuc.x[sel])[:, None] + ox.astype(np.float32)
        c, s = np.cos(nuc.ang[sel])[:, None], np.sin(nuc.ang[sel])[:, None]
        u = (dx * c + dy * s) / nuc.a[sel][:, None]
        v = (dy * c - dx * s) / b[sel][:, None]
        r = np.sqrt(u * u + v * v)
        ok = (r < 1.0 + 0.45 / b[sel][:, None]) & (py >= 0) & (py < h) & (px >= 0) & (px < w)
        flats.append((py * w + px)[ok])
        owners.append(np.broadcast_to(sel[:, None], ok.shape)[ok])
        rs.append(r[ok].astype(np.float32))
    if not flats:
        e = np.zeros(0, np.float32)
        return _Raster(np.zeros(0, np.intp), np.zeros(0, np.intp), e, e)
    flat, owner, r = np.concatenate(flats), np.concatenate(owners), np.concatenate(rs)
    best = np.full(h * w, np.inf, np.float32)
    np.minimum.at(best, flat, r)
    win = r == best[flat]
    flat, owner, r = flat[win], owner[win], r[win]
    cover = _smoothstep((1.0 - r) * b[owner] / 0.9 + 0.5)  # ~1 px soft rim
    return _Raster(flat, owner, cover.astype(np.float32), r)


def _paint(
    hem: np.ndarray, eos: np.ndarray, ras: _Raster, h_val: np.ndarray, e_val: np.ndarray
) -> None:
    """Blend per-pixel object colours (arrays aligned with ``ras.flat``) into the maps."""
    hf, ef = hem.ravel(), eos.ravel()
    c = ras.cover
    hf[ras.flat] = hf[ras.flat] * (1 - c) + c * h_val
    ef[ras.flat] = ef[ras.flat] * (1 - c) + c * e_val


# --------------------------------------------------------------------------- stroma
def _stroma(
    rng: np.random.Generator, shape: tuple[int, int], sc: float
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Hematoxylin and eosin maps of the stroma. Label-free by design (see module doc)."""
    h, w = shape
    jit_h, jit_e = (float(v) for v in rng.uniform(0.78, 1.25, 2))
    yy, xx = np.ogrid[:h, :w]
    # Wavy, broken collagen fibres: stripes along the level sets of a warped linear field.
    a0 = rng.uniform(0, np.pi)
    coarse = _smooth_noise(rng, shape, 40 * sc)  # fibre bundle waves, stain unevenness
    mid = _smooth_noise(rng, shape, 9 * sc)  # fibre wiggles, loose (pale) areas
    u = (
        xx.astype(np.float32) * np.float32(np.cos(a0))
        + yy.astype(np.float32) * np.float32(np.sin(a0))
        + coarse * np.float32(22 * sc)
        + mid * np.float32(5 * sc)
    )
    period = rng.uniform(6.0, 9.0) * sc
    wave = np.sin(u * np.float32(2 * np.pi / period))
    broken = _smoothstep(_smooth_noise(rng, shape, 2.5 * sc) * 0.8 + 0.5)
    fibres = _smoothstep((wave - 0.15) * np.float32(1.0 / 0.85)) * broken  # thin bright bands
    loose = _smoothstep(mid * 0.8 - 1.3)  # a few pale, loose areas
    low = coarse
    e_base = np.float32(rng.uniform(0.62, 0.76))
    eos = e_base * (0.62 + 0.5 * fibres + 0.10 * mid) * (1.0 - 0.55 * loose) * (1.0 + 0.1 * low)
    hem = np.float32(rng.uniform(0.10, 0.15)) * (1.0 + 0.25 * low) * (1.0 - 0.5 * loose)

    # Stromal cells: lymphocytes (small, round, very dark) and fibroblasts (spindles along
    # the fibres); their densities vary from tile to tile.
    n_l = rng.poisson(rng.uniform(0.0004, 0.0030) / sc**2 * h * w)
    n_f = rng.poisson(rng.uniform(0.0004, 0.0010) / sc**2 * h * w)
    ly, lx = rng.uniform(0, h, n_l), rng.uniform(0, w, n_l)
    fy, fx = rng.uniform(1, h - 1, n_f), rng.uniform(1, w - 1, n_f)
    iy, ix = fy.astype(np.intp), fx.astype(np.intp)
    gy = u[np.minimum(iy + 1, h - 1), ix] - u[iy - 1, ix]
    gx = u[iy, np.minimum(ix + 1, w - 1)] - u[iy, ix - 1]
    lr = rng.uniform(2.4, 3.3, n_l) * sc
    nuc = _Nuclei.concat(
        [
            _Nuclei(ly, lx, lr * rng.uniform(1.0, 1.15, n_l), lr, rng.uniform(0, np.pi, n_l),
                    rng.uniform(1.6, 2.0, n_l), np.zeros(n_l, np.int8)),
            _Nuclei(fy, fx, rng.uniform(5, 8, n_f) * sc, rng.uniform(1.4, 2.1, n_f) * sc,
                    np.arctan2(gy, gx) + np.pi / 2 + rng.normal(0, 0.15, n_f),
                    rng.uniform(1.0, 1.35, n_f), np.zeros(n_f, np.int8)),
        ]
    )  # fmt: skip
    ras = _render(shape, nuc)
    _paint(hem, eos, ras, nuc.dark[ras.owner], eos.ravel()[ras.flat] * 0.3)
    return hem, eos, (jit_h, jit_e)


# --------------------------------------------------------------------------- glands
_N_ANGLES = 512
_ANGLES = np.linspace(-np.pi, np.pi, _N_ANGLES + 1)


class _Blob:
    """A star-shaped lobe: a perturbed ellipse, radius tabulated over the angle."""

    def __init__(self, cy: float, cx: float, r: float, aspect: float, theta: float,
                 amps: np.ndarray, phases: np.ndarray) -> None:  # fmt: skip
        self.cy, self.cx = cy, cx
        self.r, self.aspect, self.theta, self.amps, self.phases = r, aspect, theta, amps, phases
        self.scaled(1.0)

    def scaled(self, f: float) -> _Blob:
        self.r *= f
        self._table: np.ndarray | None = None
        pert = float(np.abs(self.amps).sum())
        self.rmin = self.r * self.aspect * (1.0 - pert)  # bounds, no need for the table
        self.rmax = self.r * (1.0 + pert)
        return self

    @property
    def table(self) -> np.ndarray:
        if self._table is None:
            self._table = self.radius(_ANGLES).astype(np.float32)
        return self._table

    def radius(self, t: np.ndarray) -> np.ndarray:
        a, b = self.r, self.r * self.aspect
        p = t - self.theta
        ell = a * b / np.sqrt((b * np.cos(p)) ** 2 + (a * np.sin(p)) ** 2)
        k = np.arange(2, 2 + len(self.amps))[:, None]
        return ell * (
            1.0 + (self.amps[:, None] * np.cos(k * t[None] + self.phases[:, None])).sum(0)
        )

    def excess(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Distance from the centre minus the boundary radius, over a box (< 0 = inside)."""
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(self.cy)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(self.cx)
        iy, ix = y0 - round(self.cy) + _ANGLE_REACH, x0 - round(self.cx) + _ANGLE_REACH
        if min(iy, ix) >= 0 and max(iy + y1 - y0, ix + x1 - x0) <= 2 * _ANGLE_REACH + 1:
            ti = _angle_index()[iy : iy + y1 - y0, ix : ix + x1 - x0]  # no arctan2 per call
        else:
            ti = (np.arctan2(dy, dx) + np.float32(np.pi)) * np.float32(_N_ANGLES / (2 * np.pi))
            ti = ti.astype(np.intp)
        return np.hypot(dy, dx) - self.table[ti]


_ANGLE_REACH = 128


@functools.lru_cache(maxsize=1)
def _angle_index() -> np.ndarray:
    """Angle bin (index into ``_ANGLES``) of every integer offset within the reach."""
    o = np.arange(-_ANGLE_REACH, _ANGLE_REACH + 1, dtype=np.float64)
    t = np.arctan2(o[:, None], o[None, :])
    return np.rint((t + np.pi) * (_N_ANGLES / (2 * np.pi))).astype(np.intp)


def _draw_blob(rng: np.random.Generator, label: int, sc: float, cy: float, cx: float) -> _Blob:
    if label == 0:  # regular, round to oval
        return _Blob(cy, cx, rng.uniform(32, 55) * sc, rng.uniform(0.72, 1.0),
                     rng.uniform(0, np.pi), rng.uniform(0, 0.025, 3),
                     rng.uniform(0, 2 * np.pi, 3))  # fmt: skip
    return _Blob(cy, cx, rng.uniform(26, 58) * sc, rng.uniform(0.45, 0.95),
                 rng.uniform(0, np.pi), rng.uniform(0, 0.11, 4),
                 rng.uniform(0, 2 * np.pi, 4))  # fmt: skip


def _rasterise(
    parts: list[_Blob], shape: tuple[int, int], grow: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Union of lobes over their common box: (box, inside, inside dilated by ``grow``)."""
    ext = [(p.cy - p.rmax - grow - 1, p.cy + p.rmax + grow + 2,
            p.cx - p.rmax - grow - 1, p.cx + p.rmax + grow + 2) for p in parts]  # fmt: skip
    y0 = max(0, int(min(e[0] for e in ext)))
    y1 = min(shape[0], int(max(e[1] for e in ext)))
    x0 = max(0, int(min(e[2] for e in ext)))
    x1 = min(shape[1], int(max(e[3] for e in ext)))
    if y0 >= y1 or x0 >= x1:
        return None
    ex = np.full((y1 - y0, x1 - x0), np.inf, np.float32)
    for p, e in zip(parts, ext):
        py0, py1 = max(y0, int(e[0])), min(y1, int(e[1]))
        px0, px1 = max(x0, int(e[2])), min(x1, int(e[3]))
        if py0 < py1 and px0 < px1:
            sub = ex[py0 - y0 : py1 - y0, px0 - x0 : px1 - x0]
            np.minimum(sub, p.excess(py0, py1, px0, px1), out=sub)
    return (slice(y0, y1), slice(x0, x1)), ex < 0, ex < grow


def _place_glands(
    rng: np.random.Generator,
    shape: tuple[int, int],
    crop: tuple[slice, slice],
    label: int,
    sc: float,
) -> tuple[np.ndarray, list[_Blob]]:
    """Add gland objects until the coverage of the crop reaches a target drawn from the
    same distribution for both classes (within +4 %: a gland that overshoots is shrunk)."""
    h, w = shape
    mask = np.zeros(shape, bool)
    forbid = np.zeros(shape, bool)  # placed glands dilated by the stroma gap
    inner = np.zeros(shape, bool)
    inner[crop] = True
    area = int(inner.sum())
    target = rng.uniform(0.18, 0.50) * area
    slack = 0.04 * area
    blobs: list[_Blob] = []
    cyx = np.zeros((0, 2))
    rmin = np.zeros(0)
    covered = fails = 0
    gap = (4.0 if label == 0 else 2.0) * sc
    margin = 18 * sc
    for _ in range(200 + int(area / (16.0 * sc) ** 2)):
        if covered >= target:
            break
        cy, cx = rng.uniform(-margin, h + margin), rng.uniform(-margin, w + margin)
        parts = [_draw_blob(rng, label, sc, cy, cx)]
        if fails >= 25:  # a crowded tile: squeeze smaller glands into the gaps
            parts[0].scaled(max(0.6, 0.85 ** (fails // 25)))
        if label == 1:  # fused / budding glands: 1-3 overlapping lobes
            for _ in range(rng.choice(3, p=(0.4, 0.35, 0.25))):
                t = rng.uniform(0, 2 * np.pi)
                d = parts[0].r * rng.uniform(0.55, 1.05)
                sub = _draw_blob(rng, 1, sc, cy + d * np.sin(t), cx + d * np.cos(t))
                parts.append(sub.scaled(parts[0].r * rng.uniform(0.45, 0.85) / sub.r))
        fuse = label == 1 and rng.random() < 0.45  # may touch / merge with neighbours
        fails += 1
        if not fuse and len(rmin):  # cheap certain-overlap test on the inscribed discs
            clash = [np.any(np.hypot(*(cyx - (p.cy, p.cx)).T) < rmin + p.rmin + gap) for p in parts]
            if any(clash):
                continue
        for _ in range(3):
            ras = _rasterise(parts, shape, gap)
            if ras is None:
                break
            box, inside, grown = ras
            if not fuse and (forbid[box] & inside).any():
                ras = None
                break
            add = int((inside & ~mask[box] & inner[box]).sum())
            if add == 0 or covered + add <= target + slack:
                break
            parts = [p.scaled(0.85) for p in parts]
        else:
            ras = None
        if ras is None or add == 0:
            continue
        mask[box] |= inside
        forbid[box] |= grown
        covered += add
        fails = 0
        blobs.extend(parts)
        cyx = np.array([(p.cy, p.cx) for p in blobs])
        rmin = np.array([p.rmin for p in blobs])
    return mask, blobs


def _component_max(values: np.ndarray, lab: np.ndarray, n: int) -> np.ndarray:
    """Max of ``values`` per label 1..n (index 0 -> 0), via find_objects (no sort)."""
    out = np.zeros(n + 1, np.float32)
    for i, sl in enumerate(ndi.find_objects(lab, n), start=1):
        if sl is not None:
            out[i] = values[sl][lab[sl] == i].max()
    return out


def _ring(
    rng: np.random.Generator, bl: _Blob, depth: float, spacing: float, keep: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points regularly spaced along a gland at a given depth: (y, x, radial angle)."""
    nn = max(6, int(2 * np.pi * (bl.r * (1 + bl.aspect) / 2 - depth) / spacing))
    t = (np.arange(nn) + rng.uniform(-0.15, 0.15, nn)) * (2 * np.pi / nn) + rng.uniform(0, 7)
    t = (t + np.pi) % (2 * np.pi) - np.pi
    rr = bl.radius(t) - depth * rng.uniform(0.88, 1.12, nn)
    sel = rng.random(nn) < keep
    return (bl.cy + rr * np.sin(t))[sel], (bl.cx + rr * np.cos(t))[sel], t[sel]


def _glands(
    rng: np.random.Generator,
    shape: tuple[int, int],
    crop: tuple[slice, slice],
    label: int,
    sc: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask and hematoxylin/eosin maps of the gland objects (meaningful inside the mask)."""
    h, w = shape
    mask, blobs = _place_glands(rng, shape, crop, label, sc)
    hem = np.zeros(shape, np.float32)
    eos = np.zeros(shape, np.float32)
    if not mask.any():
        return mask, hem, eos
    # depth below the gland border; at half resolution (4x cheaper, ~1 px accurate)
    d2 = ndi.distance_transform_edt(mask[::2, ::2]).astype(np.float32) * np.float32(2.0)
    depth = ndi.uniform_filter(d2.repeat(2, 0).repeat(2, 1), 2)[:h, :w]
    depth[~mask] = 0.0
    lab, n = ndi.label(mask)
    inradius = _component_max(depth, lab, n)
    # fine texture (cytoplasm, debris, chromatin): white noise, softened by the final blur
    tex = np.zeros(shape, np.float32)
    tex[mask] = rng.standard_normal(int(mask.sum()), dtype=np.float32)

    g = _Glands(mask, blobs, depth, lab, n, inradius, tex, hem, eos)
    return (_benign_glands if label == 0 else _malignant_glands)(rng, g, sc)


class _Glands(NamedTuple):
    """The gland geometry both painters start from (``hem``/``eos`` are painted in place)."""

    mask: np.ndarray
    blobs: list
    depth: np.ndarray  # distance below the gland border
    lab: np.ndarray  # connected-component labels of ``mask``
    n: int
    inradius: np.ndarray  # per component
    tex: np.ndarray  # fine white-noise texture inside the mask
    hem: np.ndarray
    eos: np.ndarray


#: mask, hematoxylin and eosin maps
_Painted = tuple[np.ndarray, np.ndarray, np.ndarray]


def _benign_glands(rng: np.random.Generator, g: _Glands, sc: float) -> _Painted:
    """Benign glands: a thin ordered epithelium around a lumen, basal nuclei, goblet cells."""
    mask, blobs, depth, lab, n, inradius, tex, hem, eos = g
    shape = h, w = mask.shape
    thick = np.maximum(inradius * rng.uniform(0.64, 0.78, n + 1), 11 * sc)[lab]
    lumen = mask & (depth > thick)
    epi = mask & ~lumen
    hem[epi] = 0.24 + 0.07 * tex[epi]
    eos[epi] = 0.46 + 0.07 * tex[epi]
    apical = epi & (depth > thick - 2.0 * sc)  # brighter eosinophilic luminal border
    eos[apical] += 0.18
    hem[lumen], eos[lumen] = 0.03, 0.05 + 0.04 * np.abs(tex[lumen])
    # One ordered basal layer of small columnar nuclei; goblet cells above it.
    parts: list[_Nuclei] = []
    for bl in blobs:
        iy, ix = int(np.clip(bl.cy, 0, h - 1)), int(np.clip(bl.cx, 0, w - 1))
        # this gland's epithelium thickness (an estimate if its centre is off the canvas)
        t_gl = float(thick[iy, ix]) if lab[iy, ix] else 0.7 * bl.r * bl.aspect
        y, x, t = _ring(rng, bl, 5.0 * sc, rng.uniform(4.8, 5.6) * sc)
        nn = len(y)
        parts.append(_Nuclei(y, x, rng.uniform(4.4, 6.0, nn) * sc,
                             rng.uniform(2.2, 2.8, nn) * sc, t + rng.normal(0, 0.15, nn),
                             rng.uniform(1.3, 1.65, nn), np.ones(nn, np.int8)))  # fmt: skip
        d_gob = rng.uniform(0.55, 0.68) * t_gl
        if d_gob - 5.0 * sc >= 5.0 * sc:
            rad = min(0.27 * t_gl, 6.5 * sc)
            y, x, t = _ring(rng, bl, d_gob, rng.uniform(1.8, 2.2) * rad, keep=0.85)
            nn = len(y)
            parts.append(_Nuclei(y, x, rng.uniform(0.95, 1.35, nn) * rad,
                                 rng.uniform(0.65, 1.0, nn) * rad, t,
                                 np.zeros(nn), np.full(nn, 2, np.int8)))  # fmt: skip
    nuc = _Nuclei.concat(parts)
    ras = _render(shape, nuc)
    ras.cover *= mask.ravel()[ras.flat]
    kind = nuc.kind[ras.owner]
    goblet = kind == 2
    _paint(hem, eos, ras, np.where(goblet, 0.11, nuc.dark[ras.owner]),
           np.where(goblet, 0.04, 0.22))  # fmt: skip
    return mask, hem, eos


def _malignant_glands(rng: np.random.Generator, g: _Glands, sc: float) -> _Painted:
    """Malignant glands: thick stratified epithelium, cribriform/necrotic/solid cores."""
    mask, blobs, depth, lab, n, inradius, tex, hem, eos = g
    shape = h, w = mask.shape
    # Malignant: thick stratified epithelium; the core is cribriform (punched-out holes),
    # filled with necrotic debris, or solid.
    thick = np.maximum(inradius * rng.uniform(0.45, 0.75, n + 1), 13 * sc)[lab]
    core_kind = rng.choice(3, n + 1, p=(0.45, 0.40, 0.15))[lab]
    core = mask & (depth > thick)
    holes = core & (core_kind == 0) & (_smooth_noise(rng, shape, 4.0 * sc) > 0.3)
    necro = core & (core_kind == 1)
    cells = mask & ~holes & ~necro
    hem[cells] = 0.30 + 0.08 * tex[cells]
    eos[cells] = 0.46 + 0.07 * tex[cells]
    hem[holes], eos[holes] = 0.03, 0.06
    hem[necro] = 0.16 + 0.08 * tex[necro]
    eos[necro] = 0.66 + 0.25 * tex[necro]
    # Crowded, stratified, enlarged, pleomorphic nuclei anywhere in the epithelium, long
    # axis roughly perpendicular to the gland border.
    # A jittered grid (not uniform draws) gives crowding without big clumps and holes.
    step = np.sqrt(np.pi * 6.5 * 3.7 / rng.uniform(0.95, 1.15)) * sc
    gy0, gx0 = np.mgrid[0:h:step, 0:w:step].reshape(2, -1)
    py = gy0 + rng.uniform(-0.45, 0.45, gy0.shape) * step
    px = gx0 + rng.uniform(-0.45, 0.45, gx0.shape) * step
    iy = np.clip(np.rint(py).astype(np.intp), 0, h - 1)
    ix = np.clip(np.rint(px).astype(np.intp), 0, w - 1)
    # stratified toward the base: fewer nuclei in the apical (luminal) third, which keeps
    # a band of cytoplasm along the lumen; nests and cribriform bridges stay crowded
    rel = depth[iy, ix] / thick[iy, ix]
    p_keep = np.where(rel > 1.0, 0.8, np.where(rel < 0.6, 1.0, 0.35))
    sel = cells[iy, ix] & (rng.random(len(iy)) < p_keep)
    py, px, iy, ix = py[sel], px[sel], iy[sel], ix[sel]
    nn = len(py)
    gy = depth[np.minimum(iy + 1, h - 1), ix] - depth[np.maximum(iy - 1, 0), ix]
    gx = depth[iy, np.minimum(ix + 1, w - 1)] - depth[iy, np.maximum(ix - 1, 0)]
    parts = [_Nuclei(py, px, rng.uniform(5.0, 8.5, nn) * sc, rng.uniform(2.9, 4.6, nn) * sc,
                     np.arctan2(gy, gx) + rng.normal(0, 0.45, nn), rng.uniform(1.15, 1.7, nn),
                     np.full(nn, 3, np.int8))]  # fmt: skip
    wn = np.flatnonzero(necro)  # karyorrhectic debris in the necrotic lumens
    if len(wn):
        nd = int(len(wn) * rng.uniform(0.006, 0.012))
        pick = wn[rng.integers(0, len(wn), nd)]
        py, px = np.divmod(pick, w)
        rd = rng.uniform(0.9, 2.0, nd) * sc
        parts.append(_Nuclei(py, px, rd * rng.uniform(1.0, 1.6, nd), rd,
                             rng.uniform(0, np.pi, nd), rng.uniform(1.4, 2.0, nd),
                             np.full(nd, 4, np.int8)))  # fmt: skip
    nuc = _Nuclei.concat(parts)
    ras = _render(shape, nuc)
    ras.cover *= (mask & ~holes).ravel()[ras.flat]
    dark = nuc.dark[ras.owner]
    # vesicular chromatin: darker rim, clumped texture
    chrom = 0.8 + 0.28 * ras.r * ras.r + 0.15 * tex.ravel()[ras.flat]
    dark = np.where(nuc.kind[ras.owner] == 3, dark * chrom, dark)
    _paint(hem, eos, ras, dark, np.full(len(dark), 0.22, np.float32))
    return mask, hem, eos


# --------------------------------------------------------------------------- public API
def generate_tile(
    label: int,
    size: int | tuple[int, int] = 512,
    seed: int = 0,
    stain: str = "he",
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic H&E-like tile and its gland mask.

    Args:
        label: 0 = benign, 1 = malignant.
        size: side, or ``(height, width)``; at least 16 px.
        seed: non-negative; the same ``(label, size, seed, stain)`` gives identical pixels.
        stain: one of :data:`STAINS`.

    Returns:
        ``(image, mask)``: RGB ``uint8 (H, W, 3)`` and ``uint8 (H, W)`` with 1 = gland.

    Raises:
        InputError: on a bad label, size, seed or stain.
    """
    label = _check_label(label)
    h, w = _check_size(size)
    seed = _check_seed(seed)
    pal = _check_stain(stain)
    sc = min(1.0, min(h, w) / _FULL_SCALE_SIDE)
    m = int(math.ceil(12 * sc))  # margin: objects cut by the tile edge are drawn whole
    shape = (h + 2 * m, w + 2 * m)
    crop = (slice(m, m + h), slice(m, m + w))

    rs = np.random.default_rng([seed, _STREAM_STROMA])
    rg = np.random.default_rng([seed, _STREAM_GLAND, label])
    rn = np.random.default_rng([seed, _STREAM_NOISE])

    s_h, s_e, (jit_h, jit_e) = _stroma(rs, shape, sc)
    mask, g_h, g_e = _glands(rg, shape, crop, label, sc)
    inside = mask[crop]
    hem = np.where(inside, g_h[crop], s_h[crop])
    eos = np.where(inside, g_e[crop], s_e[crop])

    # Fine grain, slight optical blur, Beer-Lambert mixing, then sensor noise. One noise
    # field, shifted, serves all five uses (shifted copies are uncorrelated pixel-wise).
    noise = rn.standard_normal((h, w), dtype=np.float32)
    hem *= np.float32(jit_h) * (1.0 + 0.07 * noise)
    eos *= np.float32(jit_e) * (1.0 + 0.05 * np.roll(noise, (h // 2 + 1, w // 2 + 3), (0, 1)))
    hem = ndi.gaussian_filter(hem, 0.75)
    eos = ndi.gaussian_filter(eos, 0.75)
    image = np.empty((h, w, 3), np.uint8)
    for c, shift in enumerate(((1, 2), (5, 11), (13, 7))):
        od = hem * np.float32(-pal.h[c])
        od -= eos * np.float32(pal.e[c])
        od -= np.float32(pal.od0[c])
        np.exp(od, out=od)
        od *= np.float32(255.0)
        od += np.roll(noise, shift, (0, 1)) * np.float32(2.0) + np.float32(0.5)
        np.clip(od, 0, 255, out=od)
        image[..., c] = od
    return image, inside.astype(np.uint8)


def _tile_seed(seed: int, label: int, index: int) -> int:
    """A distinct seed per dataset tile (so stroma is not shared between paired tiles)."""
    return int(np.random.SeedSequence([seed, label, index]).generate_state(1, np.uint32)[0])


def _split_counts(n: int) -> tuple[int, int, int, int]:
    """(train, valcl, valpx, test) counts for one class: ~60/20/5/20 %, valpx within valcl."""
    if n < 3:
        valcl = 1 if n == 2 else 0
        return n - valcl, valcl, valcl, 0
    test = max(1, int(math.floor(0.2 * n + 0.5)))
    valcl = max(1, int(math.floor(0.2 * n + 0.5)))
    valpx = max(1, int(math.floor(0.05 * n + 0.5)))
    return n - test - valcl, valcl, valpx, test


def write_synthetic_dataset(
    root: str | Path,
    n_per_class: int,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    splits: bool = True,
    stain: str = "he",
) -> Path:
    """Write a synthetic dataset in the generic folder format and return its root.

    Layout: ``images/<class>/<class>_<i:04d>.png``, ``masks/<class>/<same stem>.png`` (0/255),
    ``classes.txt`` (``benign``, ``malignant``), ``synthetic.json`` (the parameters) and, if
    ``splits``, ``splits/{train,valcl,valpx,test}.txt`` (paths relative to ``images/``):
    per class ~60 % train, 20 % valcl, 20 % test, and valpx = ~5 % of the class (at least
    one image) taken from valcl, as in the WSOL protocol of Choe et al. Stratified and
    deterministic (from ``seed``). With fewer than 3 images per class some splits are empty.

    Idempotent: if ``root`` already holds the same dataset it returns at once; an empty or
    missing ``root``, or one left half-written by an interrupted call with the same
    parameters, is (re)written.

    Raises:
        InputError: bad arguments, or ``root`` is a file or a non-empty folder holding
            anything else (another dataset, other files).
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, numbers.Integral):
        raise InputError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    if n_per_class < 1:
        raise InputError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    h, w = _check_size(size)
    seed = _check_seed(seed)
    _check_stain(stain)
    root = Path(root)
    params = {
        "generator": "pixelcam.data.synthetic",
        "format_version": _FORMAT_VERSION,
        "n_per_class": int(n_per_class),
        "size": [h, w],
        "seed": seed,
        "splits": bool(splits),
        "stain": stain,
    }
    meta = root / "synthetic.json"
    stems = [[f"{name}_{i:04d}" for i in range(int(n_per_class))] for name in CLASS_NAMES]
    expected = [
        root / sub / name / f"{stem}.png"
        for c, name in enumerate(CLASS_NAMES)
        for stem in stems[c]
        for sub in ("images", "masks")
    ]
    if splits:
        expected += [root / "splits" / f"{s}.txt" for s in ("train", "valcl", "valpx", "test")]

    if root.exists() and not root.is_dir():
        raise InputError(f"cannot write a synthetic dataset to {root}: it is a file")
    if root.is_dir() and any(root.iterdir()):
        old = None
        if meta.is_file():
            try:
                old = json.loads(meta.read_text())
            except (OSError, ValueError):
                old = None
        if not isinstance(old, dict) or {k: v for k, v in old.items() if k != "complete"} != params:
            what = "another synthetic dataset" if isinstance(old, dict) else "other files"
            raise InputError(
                f"refusing to write a synthetic dataset into {root}: the folder is not empty "
                f"and holds {what}; choose an empty or new folder"
            )
        if old.get("complete") and all(p.is_file() for p in expected):
            return root

    root.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({**params, "complete": False}, indent=2) + "\n")
    from skimage.io import imsave  # lazy: skimage.io pulls in imageio

    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    for c, name in enumerate(CLASS_NAMES):
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        (root / "masks" / name).mkdir(parents=True, exist_ok=True)
        for i, stem in enumerate(stems[c]):
            img, msk = generate_tile(c, (h, w), _tile_seed(seed, c, i), stain)
            imsave(root / "images" / name / f"{stem}.png", img, check_contrast=False)
            imsave(root / "masks" / name / f"{stem}.png", msk * np.uint8(255), check_contrast=False)

    if splits:
        rng = np.random.default_rng([seed, _STREAM_SPLITS])
        lists: dict[str, list[str]] = {s: [] for s in ("train", "valcl", "valpx", "test")}
        for c, name in enumerate(CLASS_NAMES):
            order = rng.permutation(int(n_per_class))
            n_tr, n_vc, n_vp, n_te = _split_counts(int(n_per_class))
            rel = [f"{name}/{stems[c][j]}.png" for j in order]
            lists["train"] += sorted(rel[:n_tr])
            lists["valcl"] += sorted(rel[n_tr : n_tr + n_vc])
            lists["valpx"] += sorted(rel[n_tr : n_tr + n_vp])
            lists["test"] += sorted(rel[n_tr + n_vc : n_tr + n_vc + n_te])
        (root / "splits").mkdir(exist_ok=True)
        for s, items in lists.items():
            (root / "splits" / f"{s}.txt").write_text("".join(f"{p}\n" for p in items))

    meta.write_text(json.dumps({**params, "complete": True}, indent=2) + "\n")
    return root
