"""Evaluation metrics for qidbm models."""

from qidbm.metrics.fid import (
    CACHE_DIR_ENV,
    FEATURE_DIM,
    FID_WEIGHTS_ENV,
    FID_WEIGHTS_FILENAME,
    FIDAccumulator,
    FIDWeightsError,
    build_fid_inception,
    compute_fid,
    default_cache_dir,
    frechet_distance,
    fuse_conv_bn,
    prepare_images,
    reference_stats,
    reference_stats_path,
    resolve_weights_path,
    weights_identity,
)

__all__ = [
    "CACHE_DIR_ENV",
    "FEATURE_DIM",
    "FID_WEIGHTS_ENV",
    "FID_WEIGHTS_FILENAME",
    "FIDAccumulator",
    "FIDWeightsError",
    "build_fid_inception",
    "compute_fid",
    "default_cache_dir",
    "frechet_distance",
    "fuse_conv_bn",
    "prepare_images",
    "reference_stats",
    "reference_stats_path",
    "resolve_weights_path",
    "weights_identity",
]
