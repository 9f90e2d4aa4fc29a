"""The one typed configuration of a ganflow run.

It is validated once, at the edge (CLI or flow parameters), and then passed
around whole. Unknown keys are errors, so a typo never silently falls back to
a default. Secrets never live here: S3 credentials come from the standard
boto3 chain (environment, profile, instance role).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


from gan_model.errors import ConfigError

# The project-local state folder of the embedded defaults (data sets, caches,
# Ray results, the MLflow database, the Prefect home), and the demo bucket the
# embedded S3 server serves. Every default path below lives under STATE_DIR.
STATE_DIR = Path(".ganflow")
DEMO_BUCKET = "ganflow-demo"
MAX_CROPS_BYTES = 256 << 20  # one image's decoded crops in texture mode


def identity_hash(*parts: BaseModel | dict) -> str:
    """A short content hash of whole (sub-)models: a new field is part of the identity by default."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# scheme://userinfo@host...: a user name, a token or user:password before the host.
_USERINFO = re.compile(r"^([a-z][a-z0-9+.\-]*://)([^/@\s]+)@", re.I)


def strip_userinfo(uri: str) -> str:
    """`uri` without the credentials before its host (https://user:pass@host/x -> https://host/x),
    for everything that is shown, logged or stored."""
    return _USERINFO.sub(r"\1", uri) if uri else uri


def _no_secret(value):
    # The config is logged, stored with every MLflow run and shown in the
    # Prefect UI, so no value in it may carry credentials.
    if isinstance(value, str) and _USERINFO.match(value):
        raise ValueError("must not embed credentials (user:password@ in a URI): pass them through the "
                         "environment (AWS_* variables or a profile; MLFLOW_TRACKING_USERNAME/PASSWORD)")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*")
    @classmethod
    def _no_credentials(cls, value):
        # Every string value in every section: a URI field added later is checked by default.
        return _no_secret(value)

    def part(self, cls: type[BaseModel]) -> BaseModel:
        """The sub-model `cls` (a base class of this section) holding this section's values."""
        return cls.model_validate(self.model_dump(include=set(cls.model_fields)))


class Crops(_Section):
    """Texture mode: every image becomes `per_image` random square crops instead of one centre crop.

    A texture GAN learns from a few large images: random crops are its many training examples, and
    the generator (fully convolutional) can then render textures larger than a crop. Positions are
    drawn from `seed` and the image's content hash, so the same bytes and settings give the same
    crops on any machine, in any listing order."""

    size: int = Field(64, ge=16, le=4096, description="crop side in source pixels, resized to data.resolution")
    per_image: int = Field(256, gt=0, le=100_000, description="crops taken from every image")
    seed: int = Field(0, description="seeds the crop positions (with each image's content hash)")


class Preprocessing(_Section):
    """What turns objects into a data set. Every field here is part of the data set version."""

    resolution: int = Field(32, description="output side length in pixels (power of two, 16..256)")
    channels: Literal[1, 3] = Field(1, description="1 = grayscale, 3 = RGB; inputs are converted")
    small_images: Literal["upscale", "skip"] = Field("upscale", description="policy for images smaller than the resolution")
    max_pixels: int = Field(16_000_000, gt=0, description="images with more pixels (from the header) are skipped "
                            "undecoded; also bounds decoding memory")
    # Part of the version: it decides which objects are in the data set, not how they are decoded.
    max_object_bytes: int = Field(64 << 20, gt=0, description="larger objects are skipped without being "
                                  "downloaded (size from the listing)")
    max_images: int | None = Field(None, gt=0, description="use at most this many objects (by key order)")
    crops: Crops | None = Field(None, description="texture mode: random crops per image instead of a centre "
                                "crop, e.g. {size: 64, per_image: 256, seed: 0}; null = off")

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 16 or v > 256 or v & (v - 1):
            raise ValueError(f"must be a power of two between 16 and 256, got {v}")
        return v

    @model_validator(mode="after")
    def _crops_not_upscaled(self) -> "Preprocessing":
        # A crop smaller than the output would only be blown up: blur, not texture.
        if self.crops is None:
            return self
        if self.crops.size < self.resolution:
            raise ValueError(f"data.crops.size ({self.crops.size}) must be at least data.resolution "
                             f"({self.resolution}): raise data.crops.size or lower data.resolution")
        # One image's crops are decoded and held together (tasks/ingest.py bounds how many wait).
        if self.crops.per_image * self.channels * self.resolution ** 2 > MAX_CROPS_BYTES:
            raise ValueError(f"data.crops.per_image ({self.crops.per_image}) crops of {self.channels}x"
                             f"{self.resolution}x{self.resolution} exceed {MAX_CROPS_BYTES >> 20} MiB per image: "
                             f"lower data.crops.per_image (or split large images into several objects)")
        return self


class DataConfig(Preprocessing):
    """Where the images come from and where the data set goes: not part of its identity."""

    source: str = Field(f"s3://{DEMO_BUCKET}/mnist/", description="s3://bucket/prefix holding the images")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph...); None = AWS or AWS_ENDPOINT_URL")
    region: str | None = Field(None, description="S3 region; None = the boto3 default chain")
    embedded_server: Literal["auto", "always", "never"] = Field(
        "auto", description=f"start a local S3-compatible server seeded with a sample data set "
        f"(auto: only for the s3://{DEMO_BUCKET}/ bucket when no endpoint and no AWS credentials are configured)")
    seed_dataset: Literal["mnist", "digits", "textures"] = Field(
        "mnist", description="sample data the embedded server is seeded with (textures: colour images, for data.crops)")
    processed_uri: str = Field(str(STATE_DIR / "datasets"), description="where versioned shards are written: a local folder or an s3:// prefix (multi-node clusters)")
    cache_dir: str = Field(str(STATE_DIR / "cache"), description="local download cache, keyed by object ETag")
    shard_size: int = Field(4096, gt=0, description="images per uint8 shard")
    download_workers: int = Field(16, gt=0, le=256, description="concurrent S3 downloads")
    decode_processes: int | None = Field(
        None, ge=0, description="processes that decode and resize; None = one per CPU (max 8) when objects average "
        "64 KB or more, else in the download threads; 0 = always in the download threads")
    timeout_s: float = Field(3600, gt=0, description="the ingest step's time limit per attempt (Prefect task timeout)")

    @model_validator(mode="after")
    def _output_outside_source(self) -> "DataConfig":
        # Everything under the source prefix is read as untrusted images; shards written there
        # would be listed (and skipped) as objects of the next version.
        if self.processed_uri.startswith(self.source):
            raise ValueError(f"data.processed_uri ({self.processed_uri}) must not be under data.source: "
                             f"use another bucket or prefix that only ganflow writes")
        return self

    @field_validator("source")
    @classmethod
    def _s3_uri(cls, v: str) -> str:
        if not v.startswith("s3://") or len(v) <= 5 or v[5] == "/":
            raise ValueError(f"must look like s3://bucket/prefix, got {v!r}")
        bucket = v[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"{bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.', '-')")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"https?://[^/\s]+", v):
            raise ValueError(f"must be an http(s):// URL, got {v!r}")
        return v

    def preprocessing(self) -> Preprocessing:
        return self.part(Preprocessing)


class ModelConfig(_Section):
    # The names of gan_model/architectures/ (a test keeps the two lists equal); listed here so
    # that validating a config never imports torch.
    architecture: Literal["dcgan", "resnet_sngan"] = Field(
        "dcgan", description="network family: dcgan (Radford et al. 2015, the PyTorch examples' networks) or "
        "resnet_sngan (Miyato et al. 2018: ResNet G, spectrally normalised ResNet D)")
    z_dim: int = Field(64, gt=0, description="latent size")
    g_width: int = Field(32, gt=0, description="generator channels at full resolution (DCGAN's ngf); "
                         "they double towards 4x4")
    d_width: int = Field(32, gt=0, description="discriminator channels at its first layer (DCGAN's ndf)")
    d_norm: Literal["auto", "batch", "spectral", "none"] = Field(
        "auto", description="normalisation in D; auto = the family's own (dcgan: batch, resnet_sngan: spectral)")

    @model_validator(mode="after")
    def _norm_fits_architecture(self) -> "ModelConfig":
        if self.architecture == "resnet_sngan" and self.d_norm == "batch":
            raise ValueError("d_norm=batch does not apply to resnet_sngan (its D is spectral or none)")
        return self


class TrainRecipe(_Section):
    """What training computes. Every field here (with the model section) is part of the run's identity."""

    num_workers: int = Field(2, gt=0, description="Ray Train workers")
    batch_size: int = Field(64, gt=0, description="per-worker batch; global batch = batch_size * num_workers")
    steps: int = Field(1000, gt=0, description="optimisation steps in total (resumes never add more)")
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="how learning rates follow the global batch relative to base_batch")
    base_batch: int = Field(64, gt=0, description="global batch at which lr_g/lr_d apply as given")
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    loss: Literal["auto", "non_saturating", "hinge"] = Field(
        "auto", description="GAN loss; auto = the family's own (dcgan: non_saturating, resnet_sngan: hinge)")
    n_dis: int = Field(1, gt=0, description="D updates per G step, each on its own real batch (SNGAN's recipe: 5); "
                       "steps count G steps")
    r1_gamma: float = Field(0.0, ge=0, description="R1 penalty weight on real images (Mescheder et al. 2018); 0 = off")
    r1_every: int = Field(16, gt=0, description="lazy R1: computed every this many D updates, scaled by it (StyleGAN2)")
    augment: Literal["auto", "on", "off"] = Field(
        "auto", description="DiffAugment on every image D sees (Zhao et al. 2020); auto = on below 5,000 images")
    augment_policy: str = Field("color,translation,cutout", description="comma-separated DiffAugment transforms: "
                                "color, translation, cutout")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of G per step; ramped up during the first steps")
    ema_halflife_kimg: float | None = Field(
        None, gt=0, description="EMA of G by half-life in thousands of images (StyleGAN2, EDM); replaces ema_decay "
        "(then keep ema_decay at its default): beta = 0.5 ** (global batch / (1000 * ema_halflife_kimg))")
    ema_rampup: float = Field(0.05, ge=0, description="with ema_halflife_kimg: the half-life is at most this "
                              "fraction of the images seen so far (0 = no ramp-up)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="autocast dtype of the forward passes; auto = bf16 on CUDA, fp32 elsewhere")
    seed: int = 0

    @field_validator("augment", mode="before")
    @classmethod
    def _yaml_on_off(cls, v):
        # YAML reads a bare on/off as a boolean (`--set train.augment=off` included).
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("augment_policy")
    @classmethod
    def _known_transforms(cls, v: str) -> str:
        names = [p.strip() for p in v.split(",") if p.strip()]
        unknown = set(names) - {"color", "translation", "cutout"}
        if not names or unknown:
            raise ValueError(f"must name transforms among color, translation, cutout, got {v!r}")
        return ",".join(names)

    @model_validator(mode="after")
    def _one_ema_setting(self) -> "TrainRecipe":
        if self.ema_halflife_kimg is not None and self.ema_decay != 0.999:
            raise ValueError("set train.ema_decay or train.ema_halflife_kimg, not both")
        return self

    def lr_scale(self) -> float:
        ratio = self.batch_size * self.num_workers / self.base_batch
        return {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[self.lr_scaling]


class TrainConfig(TrainRecipe):
    """Where training runs, how it reports and recovers: changing these resumes the same run."""

    use_gpu: bool = False
    compile: bool = Field(False, description="torch.compile the forward passes of G and D (R1's double backward "
                          "stays eager); pays a compile time per worker start")
    resources_per_worker: dict[str, float] = Field(default_factory=dict, description="e.g. {CPU: 4, GPU: 1}")
    checkpoint_every: int = Field(250, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    log_every: int = Field(50, gt=0)
    max_failures: int = Field(2, ge=0, description="worker restarts from the latest checkpoint")
    storage_path: str = Field(str(STATE_DIR / "ray_results"), description="Ray Train checkpoints: a local (or shared) "
                              "path, or an s3:// prefix on data.endpoint_url for clusters without a shared disk")
    threads_per_worker: int | None = Field(None, gt=0, description="torch threads per CPU worker; None = CPUs per worker")
    timeout_s: float = Field(24 * 3600, gt=0, description="the train step's time limit per attempt (a hung collective "
                             "or an unsatisfiable resource request fails instead of waiting forever)")
    if_busy: Literal["wait", "skip"] = Field(
        "wait", description="when another flow run is training the same data set and recipe: wait for it "
        "(then reuse its checkpoint), or skip this run")
    dashboard: bool = Field(False, description="start the Ray dashboard (on 127.0.0.1) with the local Ray instance")

    def recipe(self) -> TrainRecipe:
        return self.part(TrainRecipe)


class EvalProtocol(_Section):
    """What makes two FIDs comparable. Every field here is part of the evaluation protocol's identity
    (with the weights' hash in place of `fid_weights`, and the data set version)."""

    fid_weights: str = Field(
        "auto", description="standard | auto | random | a path or s3:// URI of the 2015-12-05 Inception weights")
    n_generated: int = Field(256, gt=1)
    n_reference: int = Field(256, gt=1, description="reference images from the data set (capped at its size)")
    kid_subset_size: int = Field(100, gt=1)
    kid_subsets: int = Field(50, gt=0)
    seed: int = Field(1234, description="first latent seed; also picks the reference subset")


class EvalConfig(EvalProtocol):
    """How evaluation runs and where its outputs go: not part of the protocol."""

    batch_size: int = Field(32, gt=0, description="Inception batch size")
    grid_size: int = Field(64, gt=0, description="images in the logged sample grid")
    output_dir: str = Field(str(STATE_DIR / "eval"), description="sample grids and exported generators")
    fid_weights_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 a weights file given by path or s3:// must have; "
        "None = the standard 2015-12-05 file's")
    num_workers: int | None = Field(None, gt=0, description="Ray workers that generate and extract features "
                                    "(each its share, merged exactly); None = train.num_workers while each gets at least 256 images, "
                                    "else the driver; 1 = on the driver")
    timeout_s: float = Field(3 * 3600, gt=0, description="the evaluate step's time limit per attempt")

    def protocol(self) -> EvalProtocol:
        return self.part(EvalProtocol)


class RegistryConfig(_Section):
    tracking_uri: str | None = Field(None, description=f"None = MLFLOW_TRACKING_URI or SQLite under {STATE_DIR}; "
                                     "a SQLite store keeps its artifacts in mlartifacts/ beside the database")
    experiment: str = "ganflow"
    model_name: str = "ganflow-generator"
    promote: bool = Field(True, description="set @champion when better, else @challenger")
    min_improvement: float = Field(
        0.0, ge=0, lt=1, description="a new version becomes @champion only when its FID is lower than the "
        "champion's by at least this fraction (0.05 = 5%), under the same evaluation protocol")
    reevaluate_champion: bool = Field(
        False, description="when the champion was evaluated under another protocol (new data set version, "
        "weights or sample counts), evaluate it under this run's protocol before deciding")
    skip_unchanged: bool = Field(True, description="end a run early (Completed) when its data set version, recipe "
                                 "and protocol already produced a registered version; `ganflow run --force` overrides")
    timeout_s: float = Field(600, gt=0, description="the register step's time limit per attempt")


class GanflowConfig(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "GanflowConfig":
        if self.eval.kid_subset_size > min(self.eval.n_generated, self.eval.n_reference):
            raise ValueError(
                f"eval.kid_subset_size ({self.eval.kid_subset_size}) must not exceed "
                f"eval.n_generated and eval.n_reference")
        return self

    def training_identity(self) -> str:
        """Hash of everything that changes what training produces (given the data set version,
        which the run name carries too): the whole model section and the whole recipe. Runtime
        knobs (where checkpoints go, how often, tolerated failures, devices) are not in it, so
        changing them resumes the run."""
        return identity_hash(self.model, self.train.recipe())[:12]


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.steps=500")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2:
        raise ConfigError(f"--set {item!r}: the key must name a section and a field, e.g. train.steps")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{where}': check the spelling against the configuration reference in README.md"
    msg = first["msg"].removeprefix("Value error, ")
    return f"invalid config value for '{where}': {msg}"


def build_config(raw: dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> GanflowConfig:
    """Validate a raw mapping plus `section.key=value` overrides into a config."""
    data: dict = json.loads(json.dumps(raw or {}))  # deep copy, plain types only
    if not isinstance(data, dict):
        raise ConfigError("the config file must hold a mapping with sections data, model, train, eval, registry")
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
            node = nxt
        node[path[-1]] = value
    try:
        return GanflowConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> GanflowConfig:
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found: pass an existing YAML file to --config")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: fix the syntax") from None
    return build_config(raw, overrides)


def to_yaml(cfg: GanflowConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flat_params(cfg: GanflowConfig) -> dict[str, str]:
    """`section.key -> value` strings, for MLflow params (nothing secret is in the config)."""
    out: dict[str, str] = {}
    for section, values in cfg.model_dump(mode="json").items():
        for key, value in values.items():
            out[f"{section}.{key}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return out
