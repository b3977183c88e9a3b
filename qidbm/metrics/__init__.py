"""Evaluation metrics for qidbm models.

FID is split by job: :mod:`qidbm.metrics.inception` (the network from a weights file),
:mod:`qidbm.metrics.frechet` (the pure maths), :mod:`qidbm.metrics.fid` (the protocol on
torchmetrics' ``FrechetInceptionDistance``) and :mod:`qidbm.metrics.fid_reference` (the
on-disk reference statistics). Likelihoods (AIS) are in :mod:`qidbm.metrics.likelihood`.
"""

from qidbm.metrics.fid import (
    FIDAccumulator,
    InceptionFeatures,
    InceptionFID,
    compute_fid,
    prepare_images,
)
from qidbm.metrics.fid_reference import (
    CACHE_DIR_ENV,
    REFERENCE_SPLITS,
    data_reference_key,
    default_cache_dir,
    reference_size,
    reference_stats,
    reference_stats_path,
)
from qidbm.metrics.frechet import frechet_distance, gaussian_moments
from qidbm.metrics.inception import (
    FEATURE_DIM,
    FID_WEIGHTS_ENV,
    FID_WEIGHTS_FILENAME,
    FIDWeightsError,
    build_fid_inception,
    fuse_conv_bn,
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
    "InceptionFID",
    "REFERENCE_SPLITS",
    "InceptionFeatures",
    "build_fid_inception",
    "compute_fid",
    "data_reference_key",
    "default_cache_dir",
    "frechet_distance",
    "fuse_conv_bn",
    "gaussian_moments",
    "prepare_images",
    "reference_size",
    "reference_stats",
    "reference_stats_path",
    "resolve_weights_path",
    "weights_identity",
]
