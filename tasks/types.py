"""The small descriptors steps hand to each other: URIs, hashes, counts, metrics.

Never tensors, clients or models, so Prefect can persist, cache and retry
each step, and each step can run alone.
"""

from __future__ import annotations

from pydantic import BaseModel


class DatasetVersion(BaseModel):
    uri: str                 # folder (or prefix) holding index.json and the shards
    version: str             # content hash of the manifest + preprocessing settings
    n_images: int
    resolution: int
    channels: int
    n_skipped: int = 0
    skipped: dict[str, int] = {}   # reason -> count (per-file reasons are in index.json)
    bytes_downloaded: int = 0
    reused: bool = False     # True when the version already existed and nothing was processed


class TrainResult(BaseModel):
    checkpoint_uri: str
    run_name: str
    steps: int
    metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []   # every metrics report (a few per checkpoint), for tables


class EvalResult(BaseModel):
    fid: float
    kid: float
    kid_std: float
    n_generated: int
    n_reference: int
    protocol: dict[str, str]
    comparable: bool         # False with random Inception weights: not a published-style FID
    sample_grid: str
    generator_path: str
    latent_walks: list[str] = []   # the same walk as .gif and .mp4, beside the grid
    warnings: list[str] = []


class Registration(BaseModel):
    model_name: str
    model_version: str
    alias: str
    mlflow_run_id: str
    reason: str
    tracking_uri: str
    experiment_id: str = ""
    fid: float | None = None         # as recorded on the version
    kid: float | None = None
