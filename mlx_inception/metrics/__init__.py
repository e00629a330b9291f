"""Measures of image generators computed with the FID network: FID and Inception Score."""

from .features import (
    FID_WEIGHTS_NAME,
    FID_WEIGHTS_URL,
    class_probabilities,
    extract_features,
    fid_inception_config,
    load_fid_inception,
    save_fid_weights,
)
from .fid import FeatureStatistics, compute_statistics, fid_of, frechet_distance, trace_sqrt_product
from .inception_score import InceptionScore, inception_score, inception_score_of_folder

__all__ = [
    "FID_WEIGHTS_NAME",
    "FID_WEIGHTS_URL",
    "FeatureStatistics",
    "InceptionScore",
    "class_probabilities",
    "compute_statistics",
    "extract_features",
    "fid_inception_config",
    "fid_of",
    "frechet_distance",
    "inception_score",
    "inception_score_of_folder",
    "load_fid_inception",
    "save_fid_weights",
    "trace_sqrt_product",
]
