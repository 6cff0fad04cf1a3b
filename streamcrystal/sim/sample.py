"""A simulated crystal rod and its diffraction images: pure numpy, no bluesky.

The rod stands upright in the middle of a grid scan (rows: the slow motor, columns: the fast
motor). Its upper part holds a few crystalline grains, each lighting up its own Bragg peaks
on the detector wherever the beam hits it; its lower part is powder, giving Debye-Scherrer
rings; the columns left and right of the rod are air. Every image also has the detector's
dark current and the air scattering. :class:`CrystalRod` gives the noiseless expected image of
a grid point and noisy frames; :class:`GroundTruth` records what a crystal map should find.
``streamcrystal.sim.devices`` wraps it in ophyd devices for a bluesky ``grid_scan``.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

__all__ = ["Grain", "GroundTruth", "CrystalRod", "SPOT_SIGMA"]

#: Bragg-spot width (Gaussian sigma, px). Fitting 2-D Gaussians to the clear spots of a real
#: Dexela crop (``reference/diffraction_patch.png``, 38 x 44 px, NSLS-II XPD) gave sigma
#: 1.4-1.65 px (row) and 1.2-1.65 px (column).
SPOT_SIGMA = 1.6
#: Integrated counts per frame of one Bragg peak: a grain's maximum and the fraction of it at
#: the footprint's edge. The real maps (``reference/CG_0046_grain_maps.nc``) go from 5 to 1700;
#: their weak tail down into the noise is left out, so that a grain's footprint is exactly where
#: its peaks are clearly detectable: with 5 frames and the seed's ``trackpy.locate`` (diameter
#: 15, separation 100) the weakest (720) has a mass of >= ~350, noise maxima <= ~250.
PEAK_MAX_RANGE = (1200.0, 1700.0)
EDGE_FRACTION = 0.6
DARK_OFFSET = 100.0  # counts: the Dexela's dark-current offset
DARK_PATTERN_STD = 3.0  # counts: fixed per-pixel pattern of the dark current
AIR_PEAK = 40.0  # counts at the beam centre, falling off as 1 / (1 + (r / (0.3 D))**2)
HALO_PEAK = 15.0  # counts: broad diffuse halo of the rod material, times its thickness
#: Powder rings: radius as a fraction of the detector's smaller side, and peak counts.
RINGS = ((0.14, 120.0), (0.19, 80.0), (0.25, 60.0), (0.31, 90.0), (0.36, 40.0), (0.42, 50.0))
RING_SIGMA = 2.0  # px, radial width of a ring
#: Bragg peaks keep at least ``max(EDGE_MARGIN, min_peak_distance / 2)`` px from the detector's
#: edges: ``trackpy.locate`` ignores maxima within ``separation // 2 - 1`` px of an edge.
EDGE_MARGIN = 20.0
#: Normal approximation of Poisson noise from this mean on (see ``CrystalRod.frames``).
NORMAL_ABOVE = 50.0

_POOL: ThreadPoolExecutor | None = None


@dataclass(frozen=True, eq=False)
class Grain:
    """One crystalline grain: where it is on the grid and where its Bragg peaks are.

    Attributes
    ----------
    index : int
        The grain's number, 0-based.
    footprint : np.ndarray
        bool, grid shape: the grid points where the grain is (and contributes peaks).
    intensity : np.ndarray
        float, grid shape: integrated counts per frame of each of its peaks; 0 outside.
    peaks : np.ndarray
        (k, 2) float: detector positions (row, col) of its Bragg peaks.
    ellipse : (float, float, float, float, float), optional
        ``(row, col, row_semi_axis, col_semi_axis, peak_intensity)`` in continuous grid
        coordinates: the shape ``footprint`` and ``intensity`` sample at the grid points
        (:meth:`CrystalRod.intensity_at` evaluates it anywhere).
    """

    index: int
    footprint: np.ndarray
    intensity: np.ndarray
    peaks: np.ndarray
    ellipse: tuple[float, float, float, float, float] | None = None


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What the simulated scan contains, on its grid (rows: slow motor, columns: fast motor).

    ``extents`` and ``snaking`` are those of the start document of ``grid_scan``. The arrays
    (here and in each :class:`Grain`) are read-only.

    Examples
    --------
    >>> truth = CrystalRod((4, 5), (128, 128), n_grains=1, peaks_per_grain=1).truth
    >>> truth.seq_num_of(0, 4), truth.seq_num_of(1, 4), truth.grid_index_of(6)
    (5, 6, (1, 4))
    """

    grid_shape: tuple[int, int]
    extents: tuple[tuple[float, float], ...]
    snaking: tuple[bool, ...]
    detector_shape: tuple[int, int]
    frames_per_point: int
    grains: tuple[Grain, ...]
    empty: np.ndarray
    powder: np.ndarray
    background_seq_num: int

    def seq_num_of(self, row: int, col: int) -> int:
        """The 1-based ``seq_num`` of grid point (row, col) in ``grid_scan`` order (C order,
        the fast axis reversed on odd rows when it snakes)."""
        n_rows, n_cols = self.grid_shape
        if not (0 <= row < n_rows and 0 <= col < n_cols):
            raise IndexError(f"grid point ({row}, {col}) is outside the grid of shape {self.grid_shape}")
        if self.snaking[1] and row % 2 == 1:
            col = n_cols - 1 - col
        return int(row * n_cols + col + 1)

    def grid_index_of(self, seq_num: int) -> tuple[int, int]:
        """The grid point (row, col) of a 1-based ``seq_num``: the inverse of :meth:`seq_num_of`."""
        n_rows, n_cols = self.grid_shape
        if not 1 <= seq_num <= n_rows * n_cols:
            raise IndexError(f"seq_num {seq_num} is outside 1..{n_rows * n_cols} of the grid {self.grid_shape}")
        row, col = divmod(int(seq_num) - 1, n_cols)
        if self.snaking[1] and row % 2 == 1:
            col = n_cols - 1 - col
        return row, col


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


class CrystalRod:
    """A crystal rod on a scan grid, and its diffraction images (deterministic by ``seed``).

    Parameters
    ----------
    grid_shape : (int, int)
        Grid points (rows, columns); rows follow the slow motor, columns the fast one.
    detector_shape : (int, int)
        Detector pixels (rows, columns).
    frames_per_point : int
        Frames taken at each grid point.
    n_grains, peaks_per_grain : int
        Grains in the upper part of the rod, and Bragg peaks of each.
    min_peak_distance : float
        Least distance (px) between any two Bragg peaks of all grains.
    seed : int
        Everything (grains, peaks, dark pattern) follows from it.
    extents : ((float, float), (float, float)), optional
        Motor (start, stop) of rows and columns; default 0.25 mm steps from 0.
    snake : bool
        Whether the fast axis snakes (``grid_scan(..., snake_axes=True)``).

    Examples
    --------
    >>> rod = CrystalRod((6, 5), (128, 128), frames_per_point=2, n_grains=2, peaks_per_grain=1,
    ...                  min_peak_distance=40)
    >>> rod.frames(0, 0, np.random.default_rng(0)).shape, bool(rod.truth.empty[:, 0].all())
    ((2, 128, 128), True)
    """

    def __init__(
        self,
        grid_shape: tuple[int, int] = (16, 12),
        detector_shape: tuple[int, int] = (1024, 1024),
        *,
        frames_per_point: int = 5,
        n_grains: int = 6,
        peaks_per_grain: int = 3,
        min_peak_distance: float = 110.0,
        seed: int = 0,
        extents: tuple[tuple[float, float], tuple[float, float]] | None = None,
        snake: bool = True,
    ) -> None:
        n_rows, n_cols = (int(n) for n in grid_shape)
        height, width = (int(n) for n in detector_shape)
        if n_rows < 3 or n_cols < 3:
            raise ValueError(f"grid_shape {tuple(grid_shape)} must be at least (3, 3): a rod with air on both sides")
        if height < 64 or width < 64:
            raise ValueError(f"detector_shape {tuple(detector_shape)} must be at least (64, 64)")
        if frames_per_point < 1 or n_grains < 0 or peaks_per_grain < 1:
            raise ValueError(f"need frames_per_point >= 1, n_grains >= 0, peaks_per_grain >= 1; got "
                             f"{frames_per_point}, {n_grains}, {peaks_per_grain}")
        if extents is None:
            extents = ((0.0, 0.25 * (n_rows - 1)), (0.0, 0.25 * (n_cols - 1)))
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        self._thickness, powder, n_upper = _rod_profile(n_rows, n_cols)
        footprints, intensities, ellipses = _grains(rng, self._thickness > 0, n_upper, n_grains)
        peaks = _place_peaks(rng, n_grains * peaks_per_grain, (height, width), min_peak_distance)
        grains = tuple(
            Grain(k, _frozen(footprints[k]), _frozen(intensities[k]),
                  _frozen(peaks[k * peaks_per_grain:(k + 1) * peaks_per_grain]), ellipses[k])
            for k in range(n_grains)
        )
        self._n_upper = n_upper
        empty = self._thickness == 0
        background = (n_rows // 2, int(np.flatnonzero(empty[n_rows // 2])[0]))
        self.truth = GroundTruth(
            grid_shape=(n_rows, n_cols),
            extents=tuple((float(a), float(b)) for a, b in extents),
            snaking=(False, bool(snake)),
            detector_shape=(height, width),
            frames_per_point=int(frames_per_point),
            grains=grains,
            empty=_frozen(empty),
            powder=_frozen(powder),
            background_seq_num=0,
        )
        self.truth = replace(self.truth, background_seq_num=self.truth.seq_num_of(*background))
        self._dark, self._air, self._halo, self._rings = _detector_images(rng, (height, width))
        self._spots = [[_spot(peak, (height, width)) for peak in grain.peaks] for grain in grains]

    def mean_image(self, row: int, col: int) -> np.ndarray:
        """Noiseless expected counts per frame at grid point (row, col), float64 (H, W).

        Dark current and air scattering everywhere; the rod's diffuse halo (times its
        thickness) on the rod; powder rings (times the powder amount) in its lower part;
        each grain's Bragg spots (unit-sum Gaussians times ``grain.intensity``) on its footprint.
        """
        self.truth.seq_num_of(row, col)  # checks the index
        image = self._dark + self._air
        if self._thickness[row, col]:
            image += self._thickness[row, col] * self._halo
        if self.truth.powder[row, col]:
            image += self.truth.powder[row, col] * self._rings
        for grain, spots in zip(self.truth.grains, self._spots):
            scale = grain.intensity[row, col]
            for where, template in spots if scale else ():
                image[where] += scale * template
        return image

    def dark_image(self) -> np.ndarray:
        """Noiseless dark current (shutter closed), float64 (H, W)."""
        return self._dark.copy()

    def frames(self, row: int, col: int, rng: np.random.Generator) -> np.ndarray:
        """``frames_per_point`` noisy frames at grid point (row, col): (F, H, W) uint16.

        Each frame is drawn independently from Poisson statistics around :meth:`mean_image`,
        from its own generator seeded by ``rng`` (frames are drawn on worker threads; the result
        does not depend on them). Means above ``NORMAL_ABOVE`` (here every pixel: the dark
        offset is 100) use the normal approximation ``round(m + sqrt(m) z)``: numpy's Poisson
        sampler takes ~50 ns a pixel, ~50 s for the 10^9 pixels of the default scan, and at
        m >= 50 the two distributions differ by a skewness of at most 0.14, far below what
        peak finding can tell. Means below it are drawn exactly with ``rng.poisson``.
        """
        return _noisy(self.mean_image(row, col), self.truth.frames_per_point, rng)

    def dark_frames(self, rng: np.random.Generator) -> np.ndarray:
        """Noisy frames of :meth:`dark_image`, like :meth:`frames`: (F, H, W) uint16."""
        return _noisy(self._dark, self.truth.frames_per_point, rng)

    # The same sample anywhere, for any plan: continuous grid coordinates (row, col), motor
    # positions mapped through ``truth.extents``; at the grid points it is the grid's sample.

    def grid_coordinates(self, sample_y, sample_x) -> tuple[np.ndarray, np.ndarray]:
        """Continuous grid coordinates (row, col) of motor positions (float arrays, any shape)."""
        out = []
        for value, (start, stop), n in zip((sample_y, sample_x), self.truth.extents, self.truth.grid_shape):
            fraction = (np.asarray(value, dtype=float) - start) / (stop - start) if stop != start else 0.0 * value
            out.append(fraction * (n - 1))
        return out[0], out[1]

    def intensity_at(self, row, col) -> np.ndarray:
        """Each grain's peak intensity at continuous grid coordinates: (n_grains, *shape), 0
        where the grain is not. Equal to ``grain.intensity`` at the grid points."""
        row, col = np.broadcast_arrays(np.asarray(row, dtype=float), np.asarray(col, dtype=float))
        n_cols = self.truth.grid_shape[1]
        across = np.clip(1 - ((col - (n_cols - 1) / 2) / max(0.75, n_cols / 4)) ** 2, 0, None) ** 0.5
        region = (across > 0) & (row < self._n_upper - 0.5)
        out = np.zeros((len(self.truth.grains), *row.shape))
        for k, grain in enumerate(self.truth.grains):
            r0, c0, ar, ac, peak = grain.ellipse
            rho2 = ((row - r0) / ar) ** 2 + ((col - c0) / ac) ** 2
            out[k] = np.where(region & (rho2 <= 1), peak * (EDGE_FRACTION + (1 - EDGE_FRACTION) * (1 - rho2)), 0.0)
        return out

    def grains_at(self, sample_y, sample_x) -> np.ndarray:
        """bool (n_positions, n_grains): which grains the beam hits at each motor position."""
        row, col = self.grid_coordinates(np.ravel(sample_y), np.ravel(sample_x))
        return (self.intensity_at(row, col) > 0).T

    def mean_image_at(self, row: float, col: float) -> np.ndarray:
        """Noiseless expected counts per frame at continuous grid coordinates, float64 (H, W);
        :meth:`mean_image` anywhere (rod thickness, powder and grains evaluated there)."""
        n_rows, n_cols = self.truth.grid_shape
        thickness = float(np.clip(1 - ((col - (n_cols - 1) / 2) / max(0.75, n_cols / 4)) ** 2, 0, None) ** 0.5)
        powder = float(np.clip((row - self._n_upper + 1) / 2, 0, 1)) * thickness
        image = self._dark + self._air
        if thickness:
            image += thickness * self._halo
        if powder:
            image += powder * self._rings
        for scale, spots in zip(self.intensity_at(row, col), self._spots):
            for where, template in spots if scale else ():
                image[where] += float(scale) * template
        return image

    def frames_at(self, row: float, col: float, rng: np.random.Generator) -> np.ndarray:
        """``frames_per_point`` noisy frames at continuous grid coordinates, like :meth:`frames`."""
        return _noisy(self.mean_image_at(row, col), self.truth.frames_per_point, rng)


def _noisy(mean: np.ndarray, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Frames drawn around ``mean``, each from its own generator seeded by ``rng`` (so the
    result does not depend on the threads that draw them)."""
    mean32 = mean.astype(np.float32)
    std32 = np.sqrt(mean32)
    low = np.flatnonzero(mean < NORMAL_ABOVE)
    out = np.empty((n_frames, *mean.shape), dtype=np.uint16)

    def draw(k: int, seed: int) -> None:
        frame_rng = np.random.default_rng(seed)
        noisy = frame_rng.standard_normal(mean.shape, dtype=np.float32)
        noisy *= std32
        noisy += mean32
        noisy.flat[low] = frame_rng.poisson(mean.flat[low])
        np.rint(noisy, out=noisy)
        np.clip(noisy, 0, 65535, out=noisy)
        out[k] = noisy

    list(_pool().map(draw, range(n_frames), rng.integers(2**63, size=n_frames)))
    return out


def _pool() -> ThreadPoolExecutor:
    """Worker threads for the noise: numpy's random fills release the GIL (2x on 2 cores)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="sim-noise")
    return _POOL


def _rod_profile(n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rod thickness (1 at its axis, 0 in the air), powder amount, and rows of the upper part."""
    centre, radius = (n_cols - 1) / 2, max(0.75, n_cols / 4)
    across = np.clip(1 - ((np.arange(n_cols) - centre) / radius) ** 2, 0, None) ** 0.5
    thickness = np.broadcast_to(across, (n_rows, n_cols)).copy()
    n_upper = max(2, round(0.55 * n_rows))
    lower = np.clip((np.arange(n_rows) - n_upper + 1) / 2, 0, 1)  # half at the boundary row
    return thickness, lower[:, None] * thickness, n_upper


def _grains(rng, rod: np.ndarray, n_upper: int, n_grains: int) -> tuple[list, list, list]:
    """Elliptic grain footprints in the upper rod, each one connected and at least 2 rows tall,
    overlapping the others as little as 60 random tries allow."""
    rows, cols = np.indices(rod.shape)
    region = rod & (rows < n_upper)
    rod_cols = np.flatnonzero(rod[0])
    covered = np.zeros(rod.shape, bool)
    footprints, intensities, ellipses = [], [], []
    for _ in range(n_grains):
        best = None
        for _ in range(60):
            r0, c0 = rng.uniform(0, n_upper - 1), rng.uniform(rod_cols[0], rod_cols[-1])
            ar, ac = max(1.1, rng.uniform(0.15, 0.3) * n_upper), max(1.0, rng.uniform(0.2, 0.45) * len(rod_cols))
            rho2 = ((rows - r0) / ar) ** 2 + ((cols - c0) / ac) ** 2
            footprint = region & (rho2 <= 1)
            if footprint.any(axis=1).sum() < 2 or ndimage.label(footprint)[1] != 1:
                continue
            overlap = (footprint & covered).sum() / footprint.sum()
            if best is None or overlap < best[0]:
                best = (overlap, footprint, rho2, rng.uniform(*PEAK_MAX_RANGE), (r0, c0, ar, ac))
            if overlap <= 0.25:
                break
        if best is None:
            raise ValueError(f"could not fit grain {len(footprints)} into the rod's upper part of "
                             f"{n_upper} x {len(rod_cols)} grid points; use a larger grid_shape")
        _, footprint, rho2, peak, ellipse = best
        ellipses.append(tuple(float(v) for v in (*ellipse, peak)))
        covered |= footprint
        footprints.append(footprint)
        intensities.append(np.where(footprint, peak * (EDGE_FRACTION + (1 - EDGE_FRACTION) * (1 - rho2)), 0.0))
    return footprints, intensities, ellipses


def _place_peaks(rng, n: int, shape: tuple[int, int], min_distance: float) -> np.ndarray:
    """``n`` positions at least ``min_distance`` apart, away from the edges and off the beam
    centre (random sequential placement)."""
    centre = _beam_centre(shape)
    margin = max(EDGE_MARGIN, min_distance / 2)
    low, high = margin, np.array(shape, float) - 1 - margin
    peaks = np.empty((0, 2))
    for _ in range(200 * n + 1000):
        if len(peaks) == n:
            return peaks
        candidate = rng.uniform(low, high)
        if np.hypot(*(candidate - centre)) < 0.1 * min(shape):
            continue
        if len(peaks) == 0 or np.hypot(*(peaks - candidate).T).min() >= min_distance:
            peaks = np.vstack([peaks, candidate])
    raise ValueError(f"could not place {n} Bragg peaks {min_distance} px apart on a {shape} detector: use a larger "
                     "detector (detector_shape, --detector), fewer grains (n_grains, --grains), fewer peaks per grain "
                     "(peaks_per_grain) or a smaller min_peak_distance")


def _beam_centre(shape: tuple[int, int]) -> np.ndarray:
    return np.array([0.48 * shape[0], 0.53 * shape[1]])


def _detector_images(rng, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Dark current, air scattering, rod halo (per unit thickness), powder rings (per unit powder)."""
    size = min(shape)
    blocks = rng.normal(0, 2, (1, -(-shape[1] // 64))).repeat(64, axis=1)[:, :shape[1]]  # readout blocks
    dark = np.clip(DARK_OFFSET + blocks + rng.normal(0, DARK_PATTERN_STD, shape), 0, None)
    rr, cc = np.indices(shape, dtype=float)
    radius = np.hypot(rr - _beam_centre(shape)[0], cc - _beam_centre(shape)[1])
    air = AIR_PEAK / (1 + (radius / (0.3 * size)) ** 2)
    halo = HALO_PEAK * np.exp(-0.5 * ((radius - 0.3 * size) / (0.08 * size)) ** 2)
    rings = sum(peak * np.exp(-0.5 * ((radius - fraction * size) / RING_SIGMA) ** 2) for fraction, peak in RINGS)
    return dark, air, halo, rings


def _spot(peak: np.ndarray, shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
    """A unit-sum Gaussian spot at ``peak``: the detector slices it covers and its values."""
    half = int(np.ceil(4 * SPOT_SIGMA))
    centre = np.round(peak).astype(int)
    where = tuple(slice(max(c - half, 0), min(c + half + 1, n)) for c, n in zip(centre, shape))
    rr, cc = np.mgrid[where]
    template = np.exp(-((rr - peak[0]) ** 2 + (cc - peak[1]) ** 2) / (2 * SPOT_SIGMA**2))
    return where, template / template.sum()
