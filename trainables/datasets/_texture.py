"""Synthetic mammogram films: a breast silhouette filled with power-law tissue texture.

Pure functions of a :class:`numpy.random.Generator` and sizes. Films are float32 arrays in grey
levels (0–255 before quantisation), shape ``(height, width)``, top-left origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

_FFT_SIZES = sorted(
    2**a * 3**b * 5**c
    for a in range(14)
    for b in range(9)
    for c in range(6)
    if 2**a * 3**b * 5**c <= 16384
)


def _fft_size(n: int) -> int:
    """Smallest 2^a·3^b·5^c ≥ n (fast FFT length; the noise is cropped back to n)."""
    return next(s for s in _FFT_SIZES if s >= n)


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as ``f**-beta``; zero mean, unit std.

    ``beta`` ≈ 3 matches measured mammographic parenchyma (β ≈ 2.5–3.5). Returns float32
    ``(H, W)``.
    """
    h, w = shape
    fh, fw = _fft_size(h), _fft_size(w)
    white = rng.standard_normal((fh, fw), dtype=np.float32)
    spectrum = np.fft.rfft2(white)
    fy = np.fft.fftfreq(fh).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(fw).astype(np.float32)[None, :]
    f2 = fy * fy + fx * fx
    f2[0, 0] = 1.0
    gain = f2 ** np.float32(-beta / 4.0)  # amplitude ∝ f^(-β/2), power ∝ f^-β
    gain[0, 0] = 0.0  # no DC: zero mean
    noise = np.fft.irfft2(spectrum * gain, s=(fh, fw))[:h, :w].astype(np.float32)
    noise -= noise.mean()
    noise /= max(float(noise.std()), 1e-12)
    return noise


def _upsampled_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float,
                     factor: int) -> np.ndarray:
    """Power-law noise drawn at 1/``factor`` resolution and bilinearly enlarged (cheap; fine
    for steep spectra, which carry almost no power at the lost high frequencies)."""
    h, w = shape
    small = power_law_noise(rng, (-(-h // factor), -(-w // factor)), beta)
    big = Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float32)


@dataclass(frozen=True)
class Breast:
    """Silhouette geometry of one film, in pixels.

    The chest wall is the image's left edge for right-breast views and its right edge for left
    ones; the breast is a half-ellipse with centre ``(wall_x, cy)`` and semi-axes ``(a, b)``.
    ``mask`` is True inside the breast (bool ``(H, W)``); ``rho`` is the elliptic radius
    (0 at the chest-wall centre, 1 on the skin line), float32 ``(H, W)``.
    """

    wall_x: float
    cy: float
    a: float
    b: float
    mask: np.ndarray
    rho: np.ndarray

    def inner_point(self, rng: np.random.Generator, margin: float, max_rho: float = 0.85,
                    ) -> tuple[float, float]:
        """A random point at least ``margin`` px inside the skin line and the image borders."""
        direction = 1.0 if self.wall_x == 0 else -1.0
        h, w = self.mask.shape
        for _ in range(200):
            r = np.sqrt(rng.uniform(0.04, max_rho**2))
            t = rng.uniform(-np.pi / 2 * 0.9, np.pi / 2 * 0.9)
            x = self.wall_x + direction * r * self.a * np.cos(t)
            y = self.cy + r * self.b * np.sin(t)
            # distance to the skin line, approximated along the elliptic radius
            gap = (1.0 - r) * min(self.a, self.b)
            inside = margin <= x <= w - 1 - margin and margin <= y <= h - 1 - margin
            if inside and gap >= margin:
                return float(x), float(y)
        x = float(np.clip(self.wall_x + direction * 0.4 * self.a, margin, w - 1 - margin))
        return x, float(np.clip(self.cy, margin, h - 1 - margin))


def breast_silhouette(rng: np.random.Generator, width: int, height: int, *, left: bool,
                      mlo: bool) -> Breast:
    """Random breast outline: a half-ellipse on the chest wall with a wobbly skin line."""
    wall_x = float(width - 1) if left else 0.0
    a = rng.uniform(0.62, 0.85) * width
    if mlo:
        b = rng.uniform(0.42, 0.50) * height
        cy = rng.uniform(0.50, 0.58) * height
    else:
        b = rng.uniform(0.34, 0.44) * height
        cy = rng.uniform(0.46, 0.54) * height
    yy, xx = np.ogrid[0:height, 0:width]
    dx = (np.abs(xx - wall_x) / a).astype(np.float32)
    dy = ((yy - cy) / b).astype(np.float32)
    theta = np.arctan2(dy, dx)
    wobble = np.ones_like(theta)
    for k in (2, 3, 5):
        wobble += rng.normal(0, 0.025) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rho = (np.sqrt(dx * dx + dy * dy) / wobble).astype(np.float32)
    return Breast(wall_x=wall_x, cy=cy, a=a, b=b, mask=rho < 1.0, rho=rho)


def film(rng: np.random.Generator, width: int, height: int, *, left: bool, mlo: bool,
         density: int, beta: float, strands: int) -> tuple[np.ndarray, Breast]:
    """One film without lesions: dark background, breast tissue texture, pectoral muscle (MLO).

    ``density`` (BI-RADS 1–4) raises the fibroglandular brightness and texture amplitude.
    ``strands`` thin fibrous lines (Cooper's ligaments, ducts) converge on the nipple; they look
    like spicules and so act as clutter. Returns float32 ``(H, W)`` grey levels and the silhouette.
    """
    breast = breast_silhouette(rng, width, height, left=left, mlo=mlo)
    # drawn at half resolution: with β ≈ 3 the lost band above 0.25 cycles/px holds well under
    # 1 % of the variance, and film grain supplies the finest scale
    tissue = _upsampled_noise(rng, (height, width), beta, factor=2)
    # fibroglandular blobs: a soft threshold of a second, smoother power-law field
    glands = _upsampled_noise(rng, (height, width), beta + 0.5, factor=4)
    fg = 1.0 / (1.0 + np.exp(-2.5 * (glands + 0.6 - 0.45 * density)))
    thickness = np.sqrt(np.clip(1.0 - breast.rho**2, 0.0, 1.0)) ** 0.5  # skin-line fall-off
    level = 95.0 + 8.0 * density + (25.0 + 8.0 * density) * fg + (7.0 + 2.5 * density) * tissue
    img = np.where(breast.mask, 12.0 + (level - 12.0) * thickness, 12.0).astype(np.float32)
    if strands:
        img += _strands(rng, breast, width, height, strands) * breast.mask
    if mlo:
        img = _pectoral(rng, img, breast, width, height)
    return img, breast


def _strands(rng: np.random.Generator, breast: Breast, width: int, height: int, n: int,
             ) -> np.ndarray:
    """Thin bright curvilinear structures converging on the nipple, float32 ``(H, W)``."""
    out = np.zeros((height, width), np.float32)
    direction = 1.0 if breast.wall_x == 0 else -1.0
    nipple = np.array([breast.wall_x + direction * breast.a, breast.cy])
    for _ in range(n):
        t = rng.uniform(-np.pi / 2 * 0.85, np.pi / 2 * 0.85)
        r0 = rng.uniform(0.1, 0.7)
        start = np.array([breast.wall_x + direction * r0 * breast.a * np.cos(t),
                          breast.cy + r0 * breast.b * np.sin(t)])
        towards = nipple - start
        length = rng.uniform(0.15, 0.45) * np.linalg.norm(towards)
        end = start + towards / max(np.linalg.norm(towards), 1e-6) * length
        draw_line(out, start, end, width=rng.uniform(0.6, 1.4), amplitude=rng.uniform(4, 12))
    return out


def _pectoral(rng: np.random.Generator, img: np.ndarray, breast: Breast, width: int,
              height: int) -> np.ndarray:
    """Bright triangular pectoral muscle in the upper chest-wall corner of an MLO film."""
    yy, xx = np.ogrid[0:height, 0:width]
    yy, from_wall = yy.astype(np.float32), np.abs(xx - breast.wall_x).astype(np.float32)
    base = rng.uniform(0.25, 0.45) * width  # muscle width at the top edge
    depth = rng.uniform(0.35, 0.6) * height  # where it ends along the wall
    edge = base * (1.0 - yy / depth)
    inside = 0.5 * (1.0 - np.tanh((from_wall - edge) / 6.0))
    return (img + inside * breast.mask * rng.uniform(25, 45)).astype(np.float32)


def draw_line(out: np.ndarray, p0: np.ndarray, p1: np.ndarray, *, width: float,
              amplitude: float, taper: bool = False) -> None:
    """Add (max-combine) a Gaussian-profile line segment to ``out`` in place.

    ``width`` is the profile's sigma in px at ``p0``; with ``taper`` it narrows and fades to
    zero at ``p1`` (a spicule).
    """
    h, w = out.shape
    pad = 3.0 * width + 2.0
    x0 = int(max(0, np.floor(min(p0[0], p1[0]) - pad)))
    x1 = int(min(w, np.ceil(max(p0[0], p1[0]) + pad) + 1))
    y0 = int(max(0, np.floor(min(p0[1], p1[1]) - pad)))
    y1 = int(min(h, np.ceil(max(p0[1], p1[1]) + pad) + 1))
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    d = np.asarray(p1, np.float32) - np.asarray(p0, np.float32)
    length2 = max(float(d @ d), 1e-6)
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / length2, 0.0, 1.0)
    px = p0[0] + t * d[0] - xx
    py = p0[1] + t * d[1] - yy
    sigma = width * (1.0 - 0.7 * t) if taper else np.float32(width)
    value = amplitude * np.exp(-(px * px + py * py) / (2.0 * sigma * sigma))
    if taper:
        value *= np.sqrt(1.0 - t)
    region = out[y0:y1, x0:x1]
    np.maximum(region, value, out=region)
