"""Synthetic lesions: mass shapes driven by one latent malignancy score, drawn into films.

A mass is a star-shaped body ``r(φ) = R · (1 + Σ a_k cos(kφ + p_k))``, stretched to an oval and
rotated, with optional spicules (tapering bright lines leaving the body). The latent score
``s ∈ [0, 1]`` sets how irregular it is: low ``s`` gives a round or oval, circumscribed mass with a
sharp margin; high ``s`` gives lobulated, irregular, spiculated masses with an ill-defined margin.
The class label picks the distribution ``s`` is drawn from (see ``sample_score``), so how much
the two classes overlap in shape is one knob.

The recorded outline traces the body at half its edge height; spicules lie outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainables.datasets._texture import draw_line


@dataclass(frozen=True)
class MassShape:
    """One mass, independent of view. Lengths in px; angles in radians (shape space)."""

    score: float  # latent malignancy score s in [0, 1]
    radius: float  # mean body radius R
    elongation: float  # oval aspect ratio ≥ 1
    harmonics: tuple[tuple[int, float, float], ...]  # (k, amplitude a_k, phase p_k)
    # spicules: (angle, deviation from radial, length / R, sigma px, gain × contrast)
    spicules: tuple[tuple[float, float, float, float, float], ...]
    margin: float  # edge blur (tanh half-width), px

    def radial(self, phi: np.ndarray) -> np.ndarray:
        """Body radius ``r(φ)`` in px (shape space, before stretch/rotation)."""
        r = np.ones_like(phi)
        for k, amp, phase in self.harmonics:
            r += amp * np.cos(k * phi + phase)
        return self.radius * np.clip(r, 0.35, None)

    def extent(self) -> float:
        """Upper bound on the distance from the centre to anything drawn, px (before scale)."""
        body = self.radius * (1.0 + sum(abs(a) for _, a, _ in self.harmonics))
        spic = max((sp[2] for sp in self.spicules), default=0.0) * self.radius
        return (body + spic) * np.sqrt(self.elongation) + 3.0 * self.margin + 4.0


def sample_score(rng: np.random.Generator, malignant: bool, overlap: float) -> float:
    """Latent shape score: ``(1 - overlap) · c + overlap · u``.

    ``c ~ U(0, 0.5)`` for benign, ``U(0.5, 1)`` for malignant; ``u ~ U(0, 1)`` for both. With
    ``overlap = 0`` the classes are separated at s = 0.5; with 1 shape carries no information.
    """
    c = rng.uniform(0.5, 1.0) if malignant else rng.uniform(0.0, 0.5)
    return float((1.0 - overlap) * c + overlap * rng.uniform(0.0, 1.0))


def sample_mass(rng: np.random.Generator, score: float,
                radius_range: tuple[float, float]) -> MassShape:
    """A mass with latent score ``score``; size is independent of the score (and of the class).

    The look follows ``m = sigmoid((s - 0.5) / 0.06)``: nearly all of the change from
    circumscribed to spiculated happens for s in 0.35–0.65, so ``shape_overlap`` (how much of
    each class lands on the wrong side of 0.5) is what mainly sets the difficulty.
    """
    m = 1.0 / (1.0 + np.exp(-(score - 0.5) / 0.06))
    radius = float(np.exp(rng.uniform(np.log(radius_range[0]), np.log(radius_range[1]))))
    harmonics = []
    low = 0.03 + 0.07 * m  # lobulation
    for k in range(2, 6):
        harmonics.append((k, low * abs(rng.normal()) / np.sqrt(k - 1), rng.uniform(0, 2 * np.pi)))
    high = 0.11 * m  # irregular, angular margin
    for k in range(6, 17):
        harmonics.append((k, high * rng.normal() / np.sqrt(k / 6), rng.uniform(0, 2 * np.pi)))
    spicules = tuple(
        (rng.uniform(0, 2 * np.pi), rng.normal(0, 0.15), rng.uniform(0.4, 1.3) * (0.6 + 0.6 * m),
         rng.uniform(0.7, 1.6), rng.uniform(0.45, 0.9))
        for _ in range(int(rng.poisson(16.0 * m**1.5)))
    )
    return MassShape(score=score, radius=radius, elongation=float(rng.uniform(1.0, 1.7)),
                     harmonics=tuple(harmonics), spicules=spicules,
                     margin=float(0.7 + 2.5 * m * rng.uniform(0.5, 1.0)))


@dataclass(frozen=True)
class Placement:
    """Where one view shows a mass: centre (px), rotation (rad), isotropic scale."""

    cx: float
    cy: float
    rotation: float
    scale: float


def _to_image(shape: MassShape, place: Placement, u: np.ndarray, v: np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Shape-space points → image coordinates (stretch, scale, rotate, translate)."""
    e = np.sqrt(shape.elongation)
    x, y = u * e * place.scale, v / e * place.scale
    c, s = np.cos(place.rotation), np.sin(place.rotation)
    return place.cx + c * x - s * y, place.cy + s * x + c * y


def render_mass(img: np.ndarray, shape: MassShape, place: Placement, contrast: float) -> None:
    """Add the mass (body + spicules) to ``img`` (float32 ``(H, W)``) in place."""
    h, w = img.shape
    ext = shape.extent() * place.scale
    x0, x1 = max(0, int(place.cx - ext)), min(w, int(np.ceil(place.cx + ext)) + 1)
    y0, y1 = max(0, int(place.cy - ext)), min(h, int(np.ceil(place.cy + ext)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    # image → shape space
    c, s = np.cos(place.rotation), np.sin(place.rotation)
    dx, dy = (xx - place.cx) / place.scale, (yy - place.cy) / place.scale
    e = np.sqrt(shape.elongation)
    u = (c * dx + s * dy) / e
    v = (-s * dx + c * dy) * e
    d = np.hypot(u, v)
    r = shape.radial(np.arctan2(v, u))
    edge = 0.5 * (1.0 + np.tanh((r - d) * place.scale / shape.margin))
    dome = 0.65 + 0.35 * (1.0 - np.clip(d / r, 0.0, 1.0) ** 2)
    layer = (contrast * dome * edge).astype(np.float32)
    for angle, deviation, length, sigma, gain in shape.spicules:
        r0 = float(shape.radial(np.array([angle]))[0]) * 0.85
        direction = angle + deviation
        u0, v0 = r0 * np.cos(angle), r0 * np.sin(angle)
        reach = r0 / 0.85 + length * shape.radius
        u1, v1 = reach * np.cos(direction), reach * np.sin(direction)
        px, py = _to_image(shape, place, np.array([u0, u1]), np.array([v0, v1]))
        draw_line(layer, np.array([px[0] - x0, py[0] - y0]), np.array([px[1] - x0, py[1] - y0]),
                  width=sigma, amplitude=contrast * gain, taper=True)
    img[y0:y1, x0:x1] += layer


def outline(shape: MassShape, place: Placement) -> np.ndarray:
    """Dense integer contour of the body: int ``(N, 2)`` (x, y), 8-connected, not closed."""
    fine = np.linspace(0.0, 2 * np.pi, 2048, endpoint=False)
    fx, fy = _to_image(shape, place, *_polar(shape, fine))
    perimeter = float(np.sum(np.hypot(np.diff(fx, append=fx[:1]), np.diff(fy, append=fy[:1]))))
    phi = np.linspace(0.0, 2 * np.pi, max(16, int(np.ceil(perimeter))), endpoint=False)
    return dense_contour(*_to_image(shape, place, *_polar(shape, phi)))


def _polar(shape: MassShape, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = shape.radial(phi)
    return r * np.cos(phi), r * np.sin(phi)


def dense_contour(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Integer 8-connected contour through the closed polygon ``(x, y)`` (floats, px).

    Every edge is walked in ``ceil(max(|dx|, |dy|))`` equal steps and rounded, so consecutive
    points differ by at most one pixel in x and in y; repeats (also across the implied closing
    edge) are dropped. Returns int ``(N, 2)``.
    """
    x0, y0 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    steps = np.maximum(np.ceil(np.maximum(np.abs(x1 - x0), np.abs(y1 - y0))), 1).astype(int)
    edge = np.repeat(np.arange(len(x0)), steps)
    t = (np.arange(len(edge)) - np.repeat(np.cumsum(steps) - steps, steps)) / steps[edge]
    pts = np.stack([np.rint(x0[edge] + t * (x1 - x0)[edge]),
                    np.rint(y0[edge] + t * (y1 - y0)[edge])], axis=1).astype(np.int64)
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
    return pts[keep] if keep.any() else pts[:1]


def render_calcifications(rng: np.random.Generator, img: np.ndarray, cx: float, cy: float,
                          spread: float) -> np.ndarray:
    """A cluster of bright microcalcifications; returns its elliptical outline, int ``(N, 2)``."""
    h, w = img.shape
    x0, x1 = max(0, int(cx - spread - 6)), min(w, int(cx + spread + 7))
    y0, y1 = max(0, int(cy - spread - 6)), min(h, int(cy + spread + 7))
    layer = np.zeros((y1 - y0, x1 - x0), np.float32)
    for _ in range(int(rng.integers(6, 25))):
        r = spread * np.sqrt(rng.uniform()) * 0.8
        t = rng.uniform(0, 2 * np.pi)
        p = np.array([cx + r * np.cos(t) - x0, cy + r * np.sin(t) - y0])
        draw_line(layer, p, p + rng.normal(0, 1, 2), width=rng.uniform(0.6, 1.5),
                  amplitude=rng.uniform(35, 80))
    img[y0:y1, x0:x1] += layer
    phi = np.linspace(0.0, 2 * np.pi, max(16, int(np.ceil(2 * np.pi * spread * 3))),
                      endpoint=False)
    return dense_contour(np.clip(cx + spread * np.cos(phi), 0, w - 1),
                         np.clip(cy + spread * np.sin(phi), 0, h - 1))
