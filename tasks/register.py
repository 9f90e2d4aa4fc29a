"""Step 4, register: the evaluation in the pipeline's MLflow run, the generator as an MLflow 3
LoggedModel with its FID/KID, a new model version, and the promotion decision.

Idempotent at every stage: the logged model and the version are keyed by (MLflow run,
evaluation protocol), and the decision is written before the alias moves, so retrying this task
after a failure anywhere finds what exists, finishes what was half done, and never creates a
second version or decides a version twice.

Promotion: a new version becomes @champion only when its FID is lower than the champion's by
registry.min_improvement under the same evaluation protocol; otherwise @challenger. FIDs under
different protocols are never compared: the champion is re-evaluated under the new one when
registry.reevaluate_champion is set, else the decision says which command does it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from importlib import metadata
from pathlib import Path

from gan_model.config import GanflowConfig, RegistryConfig, to_yaml
from tasks.registry import (CHALLENGER, CHAMPION, DECISION_TAG, INTENT_TAG, fid_under, mlflow_client,
                            record_decision, record_evaluation, version_with_alias)
from tasks.types import DatasetVersion, EvalResult, Registration, TrainResult

log = logging.getLogger("ganflow.register")

PYFUNC_FILE = Path(__file__).with_name("pyfunc_generator.py")
# The hash of the evaluation protocol as configured (before the weights are resolved): with the
# data set version and the training run name it says "this run would compute nothing new".
EVAL_CONFIG_TAG = "ganflow.eval_protocol_config"
GAN_MODEL_DIR = Path(__file__).resolve().parent.parent / "gan_model"
MODEL_NAME = "generator"  # the LoggedModel's name in the run
# What the served pyfunc imports (mlflow brings pandas). Versions come from the ganflow
# distribution's own requirement ranges, never from a local build's exact version.
SERVING_PACKAGES = ("mlflow", "torch", "numpy", "pillow")


def _q(value: str) -> str:
    return value.replace("'", "\\'")


def serving_requirements() -> list[str]:
    """pip requirements of the logged model: the ranges ganflow itself declares for the packages
    the pyfunc imports (from the installed distribution's metadata), so they install anywhere;
    `name>=X.Y` of the installed release when ganflow is not installed as a distribution."""
    import re

    declared = {}
    try:
        for req in metadata.requires("ganflow") or []:
            if ";" in req:  # extras (tests) are not needed to serve
                continue
            name = re.split(r"[\s\[<>=!~]", req, maxsplit=1)[0].lower()
            declared[name] = re.sub(r"\[[^\]]*\]", "", req).replace(" ", "")
    except metadata.PackageNotFoundError:
        pass
    out = []
    for pkg in SERVING_PACKAGES:
        if pkg in declared:
            out.append(declared[pkg])
        else:  # the installed release without a local label (+cpu, +cu121) that exists nowhere else
            release = re.match(r"\d+(\.\d+)?", metadata.version(pkg)).group(0)
            out.append(f"{pkg}>={release}")
    return out


def _log_evaluation(client, run_id: str, evaluation: EvalResult) -> None:
    client.log_artifact(run_id, evaluation.sample_grid, "samples")
    for walk in evaluation.latent_walks:  # latent_walk.gif and .mp4, beside the grid
        client.log_artifact(run_id, walk, "samples")
    client.log_dict(run_id, evaluation.protocol, "fid_protocol.json")


def _logged_model(client, exp_id: str, run_id: str, cfg: GanflowConfig, evaluation: EvalResult, step: int) -> str:
    """The LoggedModel of this run under this protocol: created once (tagged with the protocol
    before anything is uploaded), so a retry after a failed upload logs into the same model."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    key = evaluation.protocol["key"]
    found = client.search_logged_models([exp_id], filter_string=(
        f"source_run_id = '{run_id}' AND tags.`ganflow.protocol_key` = '{key}'"))
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    if ready:
        return ready[0].model_id
    model = found[0] if found else client.create_logged_model(
        exp_id, name=MODEL_NAME, source_run_id=run_id, tags={"ganflow.protocol_key": key})
    _log_model(model.model_id, cfg, evaluation)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
    return model.model_id


def _log_model(model_id: str, cfg: GanflowConfig, evaluation: EvalResult) -> None:
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    signature = ModelSignature(
        inputs=Schema([ColSpec(DataType.long, "seed", required=False),
                       ColSpec(Array(DataType.double), "z", required=False)]),
        params=ParamSchema([ParamSpec("truncation", DataType.double, 1.0),
                            ParamSpec("format", DataType.string, "uint8")]))
    # Into the existing LoggedModel, with no fluent (active) run: nothing is printed on stdout.
    with tempfile.TemporaryDirectory(prefix="ganflow-model-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(to_yaml(cfg))  # the config this generator was trained and evaluated with
        mlflow.pyfunc.log_model(
            model_id=model_id, python_model=str(PYFUNC_FILE),
            artifacts={"generator": evaluation.generator_path, "config": str(config)},
            code_paths=[str(GAN_MODEL_DIR)], signature=signature, pip_requirements=serving_requirements(),
            input_example=pd.DataFrame({"seed": np.arange(2, dtype=np.int64)}))


def _link_scores(client, run_id: str, model_id: str, dataset: DatasetVersion, evaluation: EvalResult,
                 step: int, source: str) -> None:
    """FID and KID in the run, linked to the logged model and the data set they were measured on,
    with the protocol as the model's tags."""
    for k in ("fid", "kid", "kid_std"):
        client.log_metric(run_id, k, float(getattr(evaluation, k)), step=step, model_id=model_id,
                          dataset_name=source, dataset_digest=dataset.version)
    p = evaluation.protocol
    client.set_logged_model_tags(model_id, {
        "ganflow.protocol_key": p["key"], "ganflow.fid_weights": p["weights"],
        "ganflow.weights_sha256": p["weights_sha256"], "ganflow.n_generated": p["n_generated"],
        "ganflow.n_reference": p["n_reference"], "ganflow.fid_comparable": str(evaluation.comparable).lower(),
        "ganflow.dataset_version": dataset.version})


def decide(client, name: str, version: str, evaluation: EvalResult, reg: RegistryConfig,
           reevaluate=None) -> tuple[str, str]:
    """-> (alias or "", reason). `reevaluate(champion_version)` -> FID under this protocol or None;
    it is asked only when the champion has no FID under it yet."""
    if not reg.promote:
        return "", "registry.promote is false: no alias set"
    champ = version_with_alias(client, name, CHAMPION)
    if champ is None:
        return CHAMPION, "no champion yet"
    if str(champ.version) == version:
        return CHAMPION, "already the champion"
    key, fid = evaluation.protocol["key"], evaluation.fid
    champ_fid = fid_under(champ, key)
    reevaluated = ""
    if champ_fid is None and reevaluate is not None:
        champ_fid = reevaluate(champ)
        reevaluated = " (re-evaluated under this protocol)"
    if champ_fid is None:
        return CHALLENGER, (
            f"not compared with champion v{champ.version}: it was evaluated under another protocol (data set "
            f"version, Inception weights or sample counts differ) and FIDs under different protocols are not "
            f"comparable; re-evaluate it under this one with `ganflow evaluate --model models:/{name}/"
            f"{champ.version} --protocol-of models:/{name}/{version}` (or set registry.reevaluate_champion: "
            f"true), then promote by hand if this version is better")
    need = reg.min_improvement
    gain = (champ_fid - fid) / abs(champ_fid) if champ_fid else float("-inf")
    margin = f" by {gain:.1%} (registry.min_improvement {need:.1%})" if need else ""
    if fid < champ_fid and gain >= need:
        return CHAMPION, f"FID {fid:.4g} beats champion v{champ.version}'s {champ_fid:.4g}{reevaluated}{margin}"
    return CHALLENGER, (f"FID {fid:.4g} does not beat champion v{champ.version}'s {champ_fid:.4g}{reevaluated}"
                        + (f" by registry.min_improvement ({need:.1%})" if need else ""))


def _champion_reevaluator(client, cfg: GanflowConfig, dataset: DatasetVersion, key: str):
    """FID of the champion under this run's protocol, recorded on its version (weights only)."""
    def reevaluate(champ) -> float | None:
        from gan_model.checkpoint import load_generator
        from tasks.evaluate import evaluate_generator_file
        from tasks.registry import download_generator

        name = champ.name
        out = Path(cfg.eval.output_dir).expanduser().resolve() / f"{name}-v{champ.version}-{key}"
        generator = download_generator(f"models:/{name}/{champ.version}", out / "generator.pt")
        g = load_generator(generator)
        if (g.resolution, g.channels) != (dataset.resolution, dataset.channels):
            log.warning("champion v%s makes %dx%d images with %d channel(s), the data set holds %dx%d with %d: "
                        "not re-evaluated", champ.version, g.resolution, g.resolution, g.channels,
                        dataset.resolution, dataset.resolution, dataset.channels)
            return None
        result = evaluate_generator_file(cfg, dataset, generator)
        if result.protocol["key"] != key:  # e.g. `auto` weights resolved differently meanwhile
            return None
        record_evaluation(client, name, str(champ.version), key, result.fid, result.kid)
        log.info("champion v%s re-evaluated under protocol %s: FID %.4g", champ.version, key, result.fid)
        return result.fid
    return reevaluate


def register_generator(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult,
                       evaluation: EvalResult, run_id: str | None = None, *,
                       flow_run_id: str | None = None) -> Registration:
    """Register the evaluated generator of MLflow run `run_id` (opened by `tasks.tracking.open_run`;
    opened here when None) and decide its alias."""
    import mlflow

    from tasks.tracking import open_run

    reg = cfg.registry
    client, exp_id, uri = mlflow_client(reg)
    name, key = reg.model_name, evaluation.protocol["key"]
    if run_id is None:
        run_id = open_run(cfg, dataset, flow_run_id)

    # 1. The evaluation, the logged model and its scores (each idempotent).
    _log_evaluation(client, run_id, evaluation)
    model_id = _logged_model(client, exp_id, run_id, cfg, evaluation, trained.steps)
    _link_scores(client, run_id, model_id, dataset, evaluation, trained.steps, cfg.data.source)

    # 2. One registered version per (run, protocol).
    versions = [v for v in client.search_model_versions(f"name='{_q(name)}' and run_id='{run_id}'")
                if v.tags.get("ganflow.protocol_key") == key]
    if versions:
        version = str(min(int(v.version) for v in versions))
    else:
        p = evaluation.protocol
        mv = mlflow.register_model(f"models:/{model_id}", name, tags={
            "ganflow.fid": repr(evaluation.fid), "ganflow.kid": repr(evaluation.kid),
            f"ganflow.fid.{key}": repr(evaluation.fid), f"ganflow.kid.{key}": repr(evaluation.kid),
            "ganflow.protocol_key": key, "ganflow.fid_comparable": str(evaluation.comparable).lower(),
            "ganflow.fid_weights": p["weights"], "ganflow.weights_sha256": p["weights_sha256"],
            "ganflow.n_generated": p["n_generated"], "ganflow.n_reference": p["n_reference"],
            "ganflow.dataset_version": dataset.version, "ganflow.run_id": run_id, "ganflow.model_id": model_id,
            EVAL_CONFIG_TAG: eval_config_key(cfg)})
        version = str(mv.version)

    # 3. The decision: once per version. A decision written but not applied (a failure between
    #    the two) is applied as it was decided; an applied one is left alone, so a re-run never
    #    undoes a manual promotion or rollback.
    current = client.get_model_version(name, version)
    if DECISION_TAG in current.tags:
        decided = current.tags[DECISION_TAG]
        aliases = current.aliases
        alias = CHAMPION if CHAMPION in aliases else CHALLENGER if CHALLENGER in aliases else ""
        log.info("%s v%s was decided before (%s): aliases left as they are", name, version, decided)
        reason = f"decided before: {decided}"
    elif INTENT_TAG in current.tags:
        intent = json.loads(current.tags[INTENT_TAG])
        alias, reason = intent["alias"], intent["reason"]
        record_decision(client, name, version, alias, reason)
    else:
        reevaluate = _champion_reevaluator(client, cfg, dataset, key) if reg.reevaluate_champion else None
        alias, reason = decide(client, name, version, evaluation, reg, reevaluate)
        record_decision(client, name, version, alias, reason)
        log.info("registered %s v%s -> %s (%s)", name, version, alias or "no alias", reason)
    client.set_terminated(run_id, "FINISHED")
    return Registration(model_name=name, model_version=version, alias=alias, mlflow_run_id=run_id,
                        reason=reason, tracking_uri=uri, experiment_id=exp_id, fid=evaluation.fid, kid=evaluation.kid)


def eval_config_key(cfg: GanflowConfig) -> str:
    from gan_model.config import identity_hash
    return identity_hash(cfg.eval.protocol())


def register_exclusively(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult,
                         evaluation: EvalResult, run_id: str | None = None) -> Registration:
    """register_generator, one flow run at a time per model name: the champion comparison and
    the alias it sets are never interleaved with another run's."""
    from tasks.locks import exclusive, limit_name

    with exclusive(limit_name("register", cfg.registry.model_name)):
        return register_generator(cfg, dataset, trained, evaluation, run_id)


def find_registered(cfg: GanflowConfig, dataset: DatasetVersion) -> Registration | None:
    """The version registered (and decided) for this data set version, training run and evaluation
    protocol configuration, if any: a run with the same inputs would compute nothing new."""
    from tasks.train import run_name
    from tasks.tracking import RUN_KEY_TAG

    reg = cfg.registry
    client, exp_id, uri = mlflow_client(reg)
    runs = client.search_runs([exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{_q(run_name(cfg, dataset))}'",
                              order_by=["attributes.start_time DESC"])
    key = eval_config_key(cfg)
    for run in runs:
        run_id = run.info.run_id
        versions = [v for v in client.search_model_versions(f"name='{_q(reg.model_name)}' and run_id='{run_id}'")
                    if v.tags.get(EVAL_CONFIG_TAG) == key and DECISION_TAG in v.tags]
        if not versions:
            continue
        mv = client.get_model_version(reg.model_name, str(min(int(v.version) for v in versions)))
        alias = CHAMPION if CHAMPION in mv.aliases else CHALLENGER if CHALLENGER in mv.aliases else ""
        fid, kid = mv.tags.get("ganflow.fid"), mv.tags.get("ganflow.kid")
        return Registration(model_name=reg.model_name, model_version=str(mv.version), alias=alias,
                            mlflow_run_id=run_id, reason=f"unchanged since v{mv.version}: {mv.tags.get(DECISION_TAG, '')}",
                            tracking_uri=uri, experiment_id=exp_id, fid=float(fid) if fid else None,
                            kid=float(kid) if kid else None)
    return None
