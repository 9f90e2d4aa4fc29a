"""Step 3, evaluate: FID and KID of the EMA generator against the data set.

Reference statistics are cached next to the processed data set, keyed by the
protocol (weights hash, sample counts, seed), so a second evaluation on the
same version only extracts features of the generated images. The same
extractor set-up serves `ganflow fid` between two folders and `ganflow
evaluate` of a registered version.
"""

from __future__ import annotations

import functools
import logging
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from gan_model.checkpoint import export_generator, load_generator
from gan_model.config import (DataConfig, EvalConfig, EvalProtocol, GanflowConfig, RegistryConfig, build_config,
                              identity_hash)
from gan_model.errors import GanflowError, UsageError
from gan_model.evaluation import FID_FULL_RANK, compare, stats_of
from gan_model.fid import FeatureStats
from gan_model.inception import (STANDARD_SHA256, InceptionFeatures, WeightsUnavailable, check_sha256,
                                 make_random_weights, sha256_file, standard_weights_path)
from gan_model.sampling import generate_batches
from gan_model.shards import ShardedImages
from tasks.datastore import materialize, published_version
from tasks.storage import cache_path, fetch_file_once
from tasks.types import DatasetVersion, EvalResult, TrainResult

log = logging.getLogger("ganflow.evaluate")

CACHE_DIR = "fid-cache"
WALK_NAME, WALK_IMAGES = "latent_walk", 16  # 16 walks side by side (4 x 4), logged beside the grid
RANDOM_WEIGHTS_SEED = 0
# With eval.num_workers unset, generation moves to the Ray workers only when each gets at least
# this many images: a worker first imports torch and loads the Inception weights, which a few
# hundred images on the driver (about 9 images/s per core on a CPU) do not repay. Measured on the
# smoke run (32 images, 2-core machine): the evaluate task took 19.8 s with 2 workers, 14.5 s here.
MIN_IMAGES_PER_EVAL_WORKER = 256


def resolve_weights(ev: EvalConfig, data: DataConfig) -> tuple[Path | None, str]:
    """-> (weights file, kind) with kind in standard | file | random; None means build random weights."""
    choice = ev.fid_weights
    if choice in ("standard", "auto"):
        try:
            return standard_weights_path(download=True), "standard"
        except WeightsUnavailable as err:
            if choice == "standard":
                raise
            log.warning("%s. Falling back to RANDOM Inception weights: this FID is only comparable "
                        "with other random-weight FIDs on the same data set version.", err)
            return None, "random"
    if choice == "random":
        return None, "random"
    # A file named by path or URI is used only when its sha256 is the one expected: the standard
    # weights' unless the user named another hash (what the file is, not where it came from).
    if choice.startswith("s3://"):
        expected = ev.fid_weights_sha256 or STANDARD_SHA256  # part of the key: a new hash, a new fetch
        path = fetch_file_once(choice, cache_path(f"{choice}\0{expected}", data, "weights", ".pth"), data,
                               verify=lambda p: check_sha256(p, expected))
    else:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise GanflowError(f"eval.fid_weights={choice!r} is neither standard, auto, random, an s3:// URI "
                               f"nor an existing file: fix the path")
    check_sha256(path, ev.fid_weights_sha256)  # also the cached copy: the expected hash may have changed
    return path, "file"


def inception_weights(ev: EvalConfig, data: DataConfig, cache: Path,
                      reference: Callable[[], Iterable[np.ndarray]], calibration_key: str) -> tuple[Path, str]:
    """-> (weights file, kind). Random weights are calibrated on the reference images (see
    InceptionFeatures.calibrate_batchnorm) once, and cached under `calibration_key`."""
    path, kind = resolve_weights(ev, data)
    if kind != "random":
        return path, kind
    calibrated = cache / f"inception-random{RANDOM_WEIGHTS_SEED}-{calibration_key}.pth"
    if not calibrated.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".random-") as tmp:
            net = InceptionFeatures(make_random_weights(Path(tmp) / "random.pth", RANDOM_WEIGHTS_SEED),
                                    batch_size=ev.batch_size)
            net.calibrate_batchnorm(reference())
            net.save_weights(calibrated)
    return calibrated, kind


def _reference_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng([seed, 0x5EF]).choice(n_total, min(n, n_total), replace=False))


def _batches(images: ShardedImages, indices: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for i in range(0, len(indices), batch):
        yield images.take(indices[i:i + batch])


def protocol_key(ev: EvalConfig, weights_sha256: str, n_reference: int, dataset_version: str) -> str:
    """What two FIDs must share to be compared: the whole protocol sub-model, with the weights'
    hash for the weights choice, the effective reference count and the data set version."""
    fields = ev.protocol().model_dump(mode="json", exclude={"fid_weights"})
    return identity_hash({**fields, "n_reference": n_reference, "weights_sha256": weights_sha256,
                          "dataset_version": dataset_version})


def evaluate_generator(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult) -> EvalResult:
    """The pipeline's step: the EMA generator of a training checkpoint."""
    from tasks.train import local_checkpoint

    out_dir = Path(cfg.eval.output_dir).expanduser().resolve() / f"{trained.run_name}-step{trained.steps}"
    checkpoint = local_checkpoint(trained.checkpoint_uri, cfg.data)
    return evaluate_generator_file(cfg, dataset, export_generator(checkpoint, out_dir / "generator.pt"))


def eval_workers(ev: EvalConfig, train_workers: int) -> int:
    """Ray workers that generate the evaluated images: eval.num_workers when set, else as many as
    training used while each gets MIN_IMAGES_PER_EVAL_WORKER images (1 = the driver)."""
    if ev.num_workers is not None:
        return min(ev.num_workers, ev.n_generated)
    return max(1, min(train_workers, ev.n_generated // MIN_IMAGES_PER_EVAL_WORKER))


def evaluate_generator_file(cfg: GanflowConfig, dataset: DatasetVersion, generator_path: Path) -> EvalResult:
    """FID/KID of an exported generator file; outputs go beside it."""
    ev = cfg.eval
    local = materialize(dataset.uri, cfg.data)
    images = ShardedImages(local)
    cache = local / CACHE_DIR
    cache.mkdir(exist_ok=True)
    ref_idx = _reference_indices(len(images), ev.n_reference, ev.seed)
    weights_path, kind = inception_weights(ev, cfg.data, cache, lambda: _batches(images, ref_idx, ev.batch_size),
                                           calibration_key=f"n{len(ref_idx)}-s{ev.seed}")
    weights_sha = sha256_file(weights_path)
    keep = max(ev.kid_subset_size, min(ev.n_generated, ev.n_reference))
    # Built only when something here extracts features: with cached reference statistics and
    # generation on the Ray workers, the driver never loads the weights.
    net = functools.cache(lambda: InceptionFeatures(weights_path, batch_size=ev.batch_size))

    # 1. Reference statistics: once per (data set version, protocol).
    ref_file = cache / f"ref-{weights_sha[:16]}-n{len(ref_idx)}-s{ev.seed}-k{keep}.npz"
    if ref_file.is_file():
        ref = FeatureStats.load(ref_file)
        log.info("reference statistics from cache (%s)", ref_file.name)
    else:
        ref = stats_of(net(), _batches(images, ref_idx, ev.batch_size), keep)
        ref.save(ref_file)

    # 2. Generated statistics from the EMA generator, one seed per image: on the
    #    Ray workers (each its share of the seeds, merged exactly) or here.
    out_dir = Path(generator_path).parent
    g = load_generator(generator_path)
    workers = eval_workers(ev, cfg.train.num_workers)
    if workers > 1:
        from tasks.distributed_eval import generated_stats_on_ray
        gen = generated_stats_on_ray(cfg, generator_path, weights_path, keep, workers)
    else:
        gen = stats_of(net(), generate_batches(g, ev.n_generated, ev.seed, ev.batch_size), keep)
    from gan_model.images import make_grid, save_png
    grid = next(generate_batches(g, ev.grid_size, ev.seed, ev.grid_size))
    sample_grid = save_png(make_grid(grid), out_dir / "samples.png")
    walks = save_latent_walk(g, out_dir / WALK_NAME, ev.seed)

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
        "key": protocol_key(ev, weights_sha, scores["n_reference"], dataset.version),
    }
    for w in warnings:
        log.warning(w)
    return EvalResult(
        fid=scores["fid"], kid=scores["kid"], kid_std=scores["kid_std"], n_generated=scores["n_generated"],
        n_reference=scores["n_reference"], protocol=protocol,
        comparable=kind != "random" and weights_sha == STANDARD_SHA256,
        sample_grid=str(sample_grid), generator_path=str(generator_path), latent_walks=[str(p) for p in walks],
        warnings=warnings)


def save_latent_walk(g, stem: Path, seed: int, n: int = WALK_IMAGES) -> list[Path]:
    """The first `n` images of the sample grid (seeds seed..seed+n-1) each walking a smooth loop
    through latent space, as `stem`.gif and `stem`.mp4 (the same frames as `ganflow sample --out
    walk.gif`): how smoothly images change along a walk shows what a grid cannot (memorised images
    jump, a collapsed generator barely moves)."""
    from gan_model.images import save_gif, save_mp4
    from gan_model.sampling import FPS, walk_frames, walk_keyframes

    frames = walk_frames(g, walk_keyframes(seed, n, g.z_dim))
    return [save_gif(frames, stem.with_suffix(".gif"), fps=FPS), save_mp4(frames, stem.with_suffix(".mp4"), fps=FPS)]


def registered_config(client, mv) -> dict:
    """The raw config a registered version was trained and evaluated with: the copy logged with
    the model, else (versions registered before it was) its run's config.yaml."""
    import mlflow
    import yaml

    with tempfile.TemporaryDirectory(prefix="ganflow-config-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{mv.name}/{mv.version}/artifacts/config.yaml", dst_path=tmp)
        except Exception:
            path = client.download_artifacts(mv.run_id, "config.yaml", tmp)
        try:
            return yaml.safe_load(open(path))
        except yaml.YAMLError:
            return None


def registered_protocol(run_config: object) -> dict:
    """The evaluation protocol of a registered run's config.yaml, and nothing else.

    The file comes from the registry, which may hold runs logged by anyone with write access to
    it: its paths and endpoints (data.processed_uri, eval.output_dir, data.endpoint_url, a
    weights path) would point this machine's reads and writes wherever they say. Only the
    protocol's values are taken, and a weights path or URI only as a hash to check against.
    """
    section = run_config.get("eval") if isinstance(run_config, dict) else None
    section = section if isinstance(section, dict) else {}
    protocol = {k: section[k] for k in EvalProtocol.model_fields if k in section}
    weights = protocol.get("fid_weights")
    if weights not in (None, "standard", "auto", "random"):
        del protocol["fid_weights"]  # a location: the user names the file (--set eval.fid_weights=...)
    return protocol


def evaluate_registered(model_uri: str, overrides: list[str] | tuple[str, ...] = (),
                        registry: RegistryConfig | None = None, protocol_of: str | None = None) -> dict:
    """FID/KID of a registered generator under the protocol of the run that registered it, or of
    another version's (`protocol_of`: its eval settings and data set version, so the two FIDs can
    be compared), overridable. The result is recorded on the version under its protocol, where
    promotion decisions find it."""
    from tasks.ray_runtime import ray_session
    from tasks.registry import download_generator, fid_under, mlflow_client, model_version, record_evaluation

    client, _, uri = mlflow_client(registry or RegistryConfig())
    mv = model_version(client, model_uri, uri)
    # Only the protocol's values come from the registry (registered_protocol); where data and
    # outputs live comes from `overrides` and the defaults.
    protocol = registered_protocol(registered_config(client, mv))
    version = mv.tags.get("ganflow.dataset_version", "")
    other = None
    if protocol_of:
        other = model_version(client, protocol_of, uri)
        protocol = registered_protocol(registered_config(client, other))
        version = other.tags.get("ganflow.dataset_version", "")
    cfg = build_config({"eval": protocol}, overrides)
    dataset = published_version(cfg.data, version)
    # Names and versions come from the registry: only safe characters become a folder name.
    out = Path(cfg.eval.output_dir).expanduser().resolve() / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{mv.name}-v{mv.version}")
    generator = download_generator(model_uri, out / "generator.pt")
    g = load_generator(generator)
    if (g.resolution, g.channels) != (dataset.resolution, dataset.channels):
        raise UsageError(f"{model_uri} makes {g.resolution}px images with {g.channels} channel(s), data set "
                         f"{version} holds {dataset.resolution}px with {dataset.channels}: FIDs would not compare")
    with ray_session():
        result = evaluate_generator_file(cfg, dataset, generator)
    key = result.protocol["key"]
    recorded = fid_under(mv, key)
    record_evaluation(client, mv.name, str(mv.version), key, result.fid, result.kid)
    compared = None
    if other is not None:
        compared = {"model_version": str(other.version), "fid": fid_under(other, key)}
    return {"model_name": mv.name, "model_version": str(mv.version), "dataset_version": version,
            **result.model_dump(), "protocol_key": key, "recorded_fid": recorded, "compared_with": compared}


# Features kept per side for KID (8 KB each): KID draws its subsets of eval.kid_subset_size
# from the first this many images; FID's statistics cover every image.
FOLDER_KID_FEATURES = 10_000


def fid_between_folders(dir_a: str | Path, dir_b: str | Path | None = None, weights: str = "auto",
                        batch_size: int = 32, *, weights_sha256: str | None = None,
                        save_stats: str | Path | None = None, stats: str | Path | None = None) -> dict:
    """FID and KID between the images in folder A and a reference: folder B, or the statistics of
    a reference saved earlier with `save_stats` (then `stats`), under the same weights.

    Same weights resolution and calibration as the pipeline, EvalConfig's KID settings, and the
    ingest's decode limits (format allowlist, data.max_pixels, data.max_object_bytes per file).
    Images are streamed a batch at a time; symlinks that lead out of a folder are not followed.
    """
    from gan_model.images import folder_batches

    if (dir_b is None) == (stats is None):
        raise UsageError("pass either a reference folder DIR_B or --stats FILE")
    cfg = build_config({}, [f"eval.fid_weights={weights}", f"eval.batch_size={batch_size}",
                            *([f"eval.fid_weights_sha256={weights_sha256}"] if weights_sha256 else [])])
    for folder in (dir_a, dir_b):
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(f"image folder {str(folder)!r} does not exist: pass two folders of images")

    def batches(folder) -> Iterator[np.ndarray]:
        return folder_batches(folder, batch_size, max_pixels=cfg.data.max_pixels, max_bytes=cfg.data.max_object_bytes)

    def calibration_images() -> Iterator[np.ndarray]:  # only random weights are calibrated
        if dir_b is None or save_stats is not None:
            raise UsageError("saved reference statistics need fixed Inception weights (standard, or a file): "
                             "random weights are calibrated on the reference folder itself")
        return batches(dir_b)

    with tempfile.TemporaryDirectory(prefix="ganflow-fid-") as tmp:
        path, kind = inception_weights(cfg.eval, cfg.data, Path(tmp), calibration_images, "reference")
        net = InceptionFeatures(path, batch_size=batch_size)
        weights_sha = sha256_file(path)

    def extracted(folder) -> FeatureStats:
        s = stats_of(net, batches(folder), FOLDER_KID_FEATURES)
        if s.count < 2:
            raise UsageError(f"{str(folder)!r} holds {s.count} decodable images; FID needs at least 2 per side")
        return s

    generated = extracted(dir_a)
    if stats is not None:
        try:
            reference = FeatureStats.load(stats)
        except (OSError, ValueError, KeyError) as err:
            raise UsageError(f"{stats} is not a statistics file written by --save-stats ({type(err).__name__})") from None
        if reference.meta.get("weights_sha256") != weights_sha:
            raise UsageError(f"{stats} was computed with other Inception weights: pass the --weights it was saved with")
    else:
        reference = extracted(dir_b)
    if save_stats is not None:
        reference.save(save_stats, weights_sha256=weights_sha)
    ev = cfg.eval
    scores = compare(generated, reference, kid_subsets=ev.kid_subsets, seed=ev.seed,
                     kid_subset_size=min(ev.kid_subset_size, generated.count, reference.count))
    return {**scores, "weights": kind, "weights_sha256": weights_sha}
