"""The Frechet Inception Distance between two sets of images (Heusel et al. 2017).

FID = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a S_b), with mu and S the mean and
covariance of the FID network's pool3 features (:mod:`.features`). Statistics are saved and read
as pytorch-fid's ``.npz`` files (``mu`` and ``sigma``), so either tool can reuse the other's.

The square-root term is computed in float64 with symmetric eigenvalue problems only (numpy; no
SciPy): S_a S_b has the eigenvalues of the symmetric positive semi-definite F^T S_b F, where
F F^T = S_a (Cholesky when S_a is positive definite, otherwise its eigendecomposition, which
allows the rank-deficient covariances of fewer images than dimensions). So tr sqrt(S_a S_b) is
the sum of the square roots of those real eigenvalues. Eigenvalues below the rounding level of
the matrix (``size * eps * largest``) are taken as zero: they are noise, and their square roots
would add up to visible error. No imaginary parts to discard and no ``eps`` added to the
diagonal, which pytorch-fid's ``scipy.linalg.sqrtm`` path needs for singular products.

Statistics computed here from fewer images than dimensions keep their centred features as F
(S = F F^T exactly), so the d x d eigendecomposition is skipped: F^T S_b F is only n x n.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_atomically
from ..errors import DataError
from ..model import InceptionV3
from .features import Progress, extract_features, list_images


@dataclass(frozen=True, eq=False)
class FeatureStatistics:
    """The mean ``mu`` (d,) and covariance ``sigma`` (d, d) of image features, float64."""

    mu: np.ndarray
    sigma: np.ndarray
    # How many images they summarise (None when read from a file, which does not record it).
    count: int | None = None
    # F (d, n) with F F^T = sigma: the centred features / sqrt(n - 1), kept for fewer images
    # than dimensions, where it makes the square root exact and cheap. Files do not store it.
    factor: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        mu, sigma = np.asarray(self.mu), np.asarray(self.sigma)
        for name, array in (("mu", mu), ("sigma", sigma)):
            if array.dtype.kind not in "biuf":
                raise DataError(f"statistics' {name} holds {array.dtype} values, not numbers")
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise DataError(
                f"statistics need mu of shape (d,) and sigma (d, d), got {mu.shape} and "
                f"{sigma.shape}"
            )
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
            raise DataError("statistics hold NaN or infinite values")
        object.__setattr__(self, "mu", mu.astype(np.float64))
        object.__setattr__(self, "sigma", sigma.astype(np.float64))
        if self.factor is None:  # a factor F makes sigma = F F^T: symmetric and PSD by itself
            _check_covariance(self.sigma)

    @property
    def dims(self) -> int:
        """The number of feature dimensions."""
        return int(self.mu.shape[0])

    @classmethod
    def from_features(cls, features: np.ndarray) -> FeatureStatistics:
        """Return the mean and (unbiased, like ``np.cov``) covariance of features (N, d)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise DataError(
                f"FID needs the features of at least 2 images, got {features.shape[0]}"
            )
        count, dims = features.shape
        mu = np.mean(features, axis=0)
        factor = (features - mu).T / np.sqrt(count - 1) if count <= dims else None
        return cls(mu=mu, sigma=np.cov(features, rowvar=False), count=count, factor=factor)

    def save(self, path: str | os.PathLike) -> Path:
        """Write pytorch-fid's ``.npz`` (``mu``, ``sigma``) atomically and return its path."""
        def write(temporary: Path) -> None:
            with open(temporary, "wb") as handle:
                # Through a handle, so numpy never appends ".npz" to the name.
                np.savez_compressed(handle, mu=self.mu, sigma=self.sigma)

        return write_atomically(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStatistics:
        """Return statistics read from an ``.npz`` with ``mu`` and ``sigma`` (pytorch-fid's)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such statistics file")
        # np.load takes a file that is not an .npz (a zip archive) for a pickle, and its error
        # suggests loading it "unsafely": statistics are never pickles, so say what it is not.
        if not zipfile.is_zipfile(path):
            raise DataError(
                f"{path} is not an .npz file (not a zip archive): expected the mu and sigma "
                "arrays that --save-stats (or pytorch-fid) writes"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [key for key in ("mu", "sigma") if key not in data.files]
                if missing:
                    raise DataError(
                        f"{path} has no {' or '.join(missing)}: not FID statistics (expected "
                        "the mu and sigma arrays that --save-stats writes)"
                    )
                _check_sizes(data.zip)
                return cls(mu=data["mu"], sigma=data["sigma"])
        except DataError as error:
            if str(path) in str(error):
                raise
            raise DataError(f"{path}: {error}") from None
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            if "pickle" in reason:  # object arrays: never loaded, never suggested
                reason = "it holds Python objects, not plain arrays"
            raise DataError(
                f"{path} is not a readable .npz file ({reason or type(error).__name__})"
            ) from None


# How far a covariance read from a file may stray from symmetric positive semi-definite, relative
# to its largest entry: float32 statistics (pytorch-fid computes in float64, others may not)
# round at about 1e-7; a damaged or made-up matrix is off by far more.
COVARIANCE_TOLERANCE = 1e-5


def _check_covariance(sigma: np.ndarray) -> None:
    """Raise DataError unless ``sigma`` is symmetric positive semi-definite (within tolerance)."""
    scale = float(np.max(np.abs(sigma), initial=0.0))
    tolerance = COVARIANCE_TOLERANCE * max(scale, np.finfo(np.float64).tiny)
    if np.any(np.abs(sigma - sigma.T) > tolerance):
        raise DataError("statistics' sigma is not symmetric: not a covariance matrix")
    if np.any(np.diag(sigma) < -tolerance):
        raise DataError("statistics' sigma has negative variances: not a covariance matrix")
    try:
        np.linalg.cholesky(sigma + np.eye(sigma.shape[0]) * tolerance)
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh((sigma + sigma.T) / 2)[0])
        raise DataError(
            f"statistics' sigma has a negative eigenvalue ({smallest:.3g}): not positive "
            "semi-definite, so not a covariance matrix"
        ) from None


# The largest feature size any FID network has (pool3: 2048), with room to spare: a file whose
# sigma claims more would make numpy allocate what the header says before reading a byte.
MAX_DIMS = 4096


def _check_sizes(archive: zipfile.ZipFile) -> None:
    """Raise DataError when ``mu`` or ``sigma`` in the .npz claims a shape beyond MAX_DIMS."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    for name, expected in (("mu", "(d,)"), ("sigma", "(d, d)")):
        member_name = f"{name}.npy" if f"{name}.npy" in archive.namelist() else name
        with archive.open(member_name) as member:
            version = np.lib.format.read_magic(member)
            if version not in readers:
                raise DataError(f"statistics' {name} is in .npy format {version}, not 1.0 or 2.0")
            shape, _, _ = readers[version](member)
        if len(shape) != len(expected.split(",")) - (name == "mu") or any(
            size > MAX_DIMS for size in shape
        ):
            raise DataError(
                f"statistics' {name} has shape {shape}: expected {expected} with d at most "
                f"{MAX_DIMS}"
            )


def _positive_semidefinite_factor(matrix: np.ndarray) -> np.ndarray:
    """Return F with F F^T = matrix, for a symmetric positive semi-definite matrix."""
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        # Singular (fewer samples than dimensions): the eigendecomposition, with the small
        # negative eigenvalues that rounding leaves set to zero.
        eigenvalues, eigenvectors = np.linalg.eigh(matrix)
        keep = eigenvalues > 0
        return eigenvectors[:, keep] * np.sqrt(eigenvalues[keep])


def trace_sqrt_product(
    sigma_a: np.ndarray, sigma_b: np.ndarray, factor_a: np.ndarray | None = None
) -> float:
    """Return tr sqrt(S_a S_b) for symmetric positive semi-definite S_a, S_b, in float64.

    See the module docstring: the square roots of the eigenvalues of F^T S_b F, F F^T = S_a.
    ``factor_a``, when known, is such an F and spares factorising S_a.
    """
    sigma_a = np.asarray(sigma_a, dtype=np.float64)
    sigma_b = np.asarray(sigma_b, dtype=np.float64)
    if factor_a is None:
        factor = _positive_semidefinite_factor((sigma_a + sigma_a.T) / 2)
    else:
        factor = np.asarray(factor_a, dtype=np.float64)
    middle = factor.T @ ((sigma_b + sigma_b.T) / 2) @ factor
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    if eigenvalues.size == 0:
        return 0.0
    cutoff = max(float(eigenvalues[-1]), 0.0) * eigenvalues.size * np.finfo(np.float64).eps
    return float(np.sum(np.sqrt(eigenvalues[eigenvalues > cutoff])))


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """Return the Frechet distance between the Gaussians N(mu_a, S_a) and N(mu_b, S_b)."""
    if a.dims != b.dims:
        raise DataError(
            f"statistics of different sizes: {a.dims} and {b.dims} features; compute both "
            "with the same --dims"
        )
    difference = a.mu - b.mu
    # S_a S_b and S_b S_a have the same eigenvalues: factor whichever side comes with one.
    first, second = (b, a) if a.factor is None and b.factor is not None else (a, b)
    value = (
        float(difference @ difference)
        + float(np.trace(a.sigma))
        + float(np.trace(b.sigma))
        - 2.0 * trace_sqrt_product(first.sigma, second.sigma, first.factor)
    )
    # A squared distance: a value below zero is rounding (a set against itself).
    return max(value, 0.0)


def is_statistics_file(path: str | os.PathLike) -> bool:
    """Return True when ``path`` names an ``.npz`` file (pytorch-fid's rule: by its ending)."""
    return str(path).lower().endswith(".npz")


def image_files(source: str | os.PathLike) -> list[Path]:
    """Return the images of a folder whose statistics can be computed (at least 2 of them).

    Raises DataError naming the folder when it is missing, not a folder, or has too few
    images: cheap checks, made before any image is decoded.
    """
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such folder or .npz file")
    if not path.is_dir():
        raise DataError(f"{path}: neither a folder of images nor an .npz statistics file")
    files = list_images(path)
    kinds = ".bmp, .jpg, .jpeg, .pgm, .png, .ppm, .tif, .tiff or .webp"
    if not files:
        raise DataError(f"no images in {path} (files directly inside it: {kinds})")
    if len(files) < 2:
        raise DataError(f"{path}: FID needs at least 2 images, found 1 ({kinds})")
    return files


def compute_statistics(
    source: str | os.PathLike,
    model: InceptionV3,
    batch_size: int = 50,
    dims: int = 2048,
    progress: Progress | None = None,
) -> FeatureStatistics:
    """Return the statistics of a folder of images, or those saved in an ``.npz`` file."""
    if is_statistics_file(source):
        return FeatureStatistics.load(source)
    files = image_files(source)
    return FeatureStatistics.from_features(
        extract_features(model, files, batch_size=batch_size, dims=dims, progress=progress)
    )


def fid_of(
    source_a: str | os.PathLike,
    source_b: str | os.PathLike,
    model: InceptionV3,
    batch_size: int = 50,
    dims: int = 2048,
) -> float:
    """Return the FID between two folders of images or ``.npz`` statistics files."""
    first = compute_statistics(source_a, model, batch_size, dims)
    second = compute_statistics(source_b, model, batch_size, dims)
    return frechet_distance(first, second)
