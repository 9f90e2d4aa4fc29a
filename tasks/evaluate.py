"""Step 3, evaluate: FID and KID of the EMA generator against the data set.

Reference statistics are cached next to the processed data set, keyed by
the protocol (weights hash, sample counts, seed), so a second evaluation on
the same version only extracts features of the generated images.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path

import numpy as np

from gan_model.checkpoint import export_generator, load_generator
from gan_model.config import DataConfig, EvalConfig, GanflowConfig
from gan_model.evaluation import FID_FULL_RANK, compare, stats_of
from gan_model.fid import FeatureStats
from gan_model.images import make_grid, save_png
from gan_model.inception import (STANDARD_HASH_PREFIX, InceptionFeatures, WeightsUnavailable,
                                 make_random_weights, sha256_file, standard_weights_path)
from gan_model.sampling import generate_batches
from gan_model.shards import ShardedImages
from tasks.datastore import materialize
from tasks.types import DatasetVersion, EvalResult, PipelineError, TrainResult

log = logging.getLogger("ganflow.evaluate")

CACHE_DIR = "fid-cache"
RANDOM_WEIGHTS_SEED = 0


def resolve_weights(ev: EvalConfig, data: DataConfig) -> tuple[Path | None, str]:
    """-> (weights file, kind) with kind in standard | file | random; None means build random weights."""
    choice = ev.fid_weights
    if choice in ("standard", "auto"):
        try:
            return standard_weights_path(download=True), "standard"
        except WeightsUnavailable as err:
            if choice == "standard":
                raise PipelineError(str(err)) from None
            log.warning("%s. Falling back to RANDOM Inception weights: this FID is only comparable "
                        "with other random-weight FIDs on the same data set version.", err)
            return None, "random"
    if choice == "random":
        return None, "random"
    if choice.startswith("s3://"):
        from tasks.s3 import download_file
        dest = Path(data.cache_dir).expanduser().resolve() / "weights" / (
            hashlib.sha256(choice.encode()).hexdigest()[:16] + ".pth")
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".part")
            download_file(choice, tmp, data.endpoint_url, data.region)
            tmp.replace(dest)
        return dest, "file"
    path = Path(choice).expanduser()
    if not path.is_file():
        raise PipelineError(f"eval.fid_weights={choice!r} is neither standard, auto, random, an s3:// URI "
                            f"nor an existing file: fix the path")
    return path, "file"


def _reference_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng([seed, 0x5EF]).choice(n_total, min(n, n_total), replace=False))


def _batches(images: ShardedImages, indices: np.ndarray, batch: int):
    for i in range(0, len(indices), batch):
        yield images.take(indices[i:i + batch])


def _extractor(ev: EvalConfig, data: DataConfig, cache: Path, images: ShardedImages,
               ref_idx: np.ndarray) -> tuple[InceptionFeatures, str, Path]:
    path, kind = resolve_weights(ev, data)
    if kind == "random":
        # Random weights are calibrated on this data set's reference images
        # (see InceptionFeatures.calibrate_batchnorm) and cached with it.
        calibrated = cache / f"inception-random{RANDOM_WEIGHTS_SEED}-n{len(ref_idx)}-s{ev.seed}.pth"
        if not calibrated.is_file():
            base = make_random_weights(cache / f"inception-random{RANDOM_WEIGHTS_SEED}.pth", RANDOM_WEIGHTS_SEED)
            net = InceptionFeatures(base, batch_size=ev.batch_size)
            net.calibrate_batchnorm(_batches(images, ref_idx, ev.batch_size))
            net.save_weights(calibrated)
            base.unlink()
        path = calibrated
    try:
        net = InceptionFeatures(path, batch_size=ev.batch_size)
    except WeightsUnavailable as err:
        raise PipelineError(str(err)) from None
    return net, kind, path


def evaluate_generator(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult) -> EvalResult:
    """The pipeline's step: the EMA generator of a training checkpoint."""
    out_dir = Path(cfg.eval.output_dir).expanduser().resolve() / f"{trained.run_name}-step{trained.steps}"
    from tasks.train import local_checkpoint
    checkpoint = local_checkpoint(trained.checkpoint_uri, cfg)
    return evaluate_generator_file(cfg, dataset, export_generator(checkpoint, out_dir / "generator.pt"))


def evaluate_generator_file(cfg: GanflowConfig, dataset: DatasetVersion, generator_path: Path) -> EvalResult:
    """FID/KID of an exported generator file; outputs go beside it."""
    ev = cfg.eval
    local = materialize(dataset.uri, cfg.data)
    images = ShardedImages(local)
    cache = local / CACHE_DIR
    cache.mkdir(exist_ok=True)
    ref_idx = _reference_indices(len(images), ev.n_reference, ev.seed)
    net, kind, weights_path = _extractor(ev, cfg.data, cache, images, ref_idx)
    weights_sha = sha256_file(weights_path)
    keep = max(ev.kid_subset_size, min(ev.n_generated, ev.n_reference))

    # 1. Reference statistics: once per (data set version, protocol).
    ref_file = cache / f"ref-{weights_sha[:16]}-n{len(ref_idx)}-s{ev.seed}-k{keep}.npz"
    if ref_file.is_file():
        ref = FeatureStats.load(ref_file)
        log.info("reference statistics from cache (%s)", ref_file.name)
    else:
        ref = stats_of(net, _batches(images, ref_idx, ev.batch_size), keep)
        ref.save(ref_file)

    # 2. Generated statistics from the EMA generator, one seed per image: on the
    #    Ray workers (each its share of the seeds, merged exactly) or here.
    out_dir = Path(generator_path).parent
    g = load_generator(generator_path)
    workers = min(ev.num_workers if ev.num_workers is not None else cfg.train.num_workers, ev.n_generated)
    if workers > 1:
        from tasks.distributed_eval import generated_stats_on_ray
        gen = generated_stats_on_ray(cfg, generator_path, weights_path, keep, workers)
    else:
        gen = stats_of(net, generate_batches(g, ev.n_generated, ev.seed, ev.batch_size), keep)
    grid = next(generate_batches(g, ev.grid_size, ev.seed, ev.grid_size))
    sample_grid = save_png(make_grid(grid), out_dir / "samples.png")

    # 3. The numbers, and the protocol that makes them comparable.
    scores = compare(gen, ref, kid_subsets=ev.kid_subsets, kid_subset_size=ev.kid_subset_size, seed=ev.seed)
    warnings = []
    if min(scores["n_generated"], scores["n_reference"]) < FID_FULL_RANK:
        warnings.append(f"FID from fewer than {FID_FULL_RANK} samples is biased upwards (rank-deficient "
                        f"covariance): compare it only with runs of the same sample counts; KID is unbiased")
    if kind == "random":
        warnings.append("random Inception weights: this FID is not comparable with published FIDs")
    protocol = {
        "feature": "inception-v3 pool3 (2048), torch-fidelity, TF1 bilinear resize to 299",
        "weights": kind, "weights_sha256": weights_sha,
        "n_generated": str(scores["n_generated"]), "n_reference": str(scores["n_reference"]),
        "reference": f"{dataset.version}: seeded subset (seed {ev.seed}) of the training images",
        "kid": f"poly3, {ev.kid_subsets} subsets of {ev.kid_subset_size}",
        "generated_on": f"{workers} Ray workers" if workers > 1 else "the driver",
        "torch_fidelity": metadata.version("torch-fidelity"), "torch": metadata.version("torch"),
    }
    protocol["key"] = protocol_key(protocol)
    for w in warnings:
        log.warning(w)
    return EvalResult(
        fid=scores["fid"], kid=scores["kid"], kid_std=scores["kid_std"], n_generated=scores["n_generated"],
        n_reference=scores["n_reference"], protocol=protocol,
        comparable=kind != "random" and weights_sha.startswith(STANDARD_HASH_PREFIX),
        sample_grid=str(sample_grid), generator_path=str(generator_path), warnings=warnings)


def protocol_key(protocol: dict[str, str]) -> str:
    """What two FIDs must share to be compared: weights, sample counts and reference set."""
    fields = {k: protocol[k] for k in ("weights_sha256", "n_generated", "n_reference", "reference")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
