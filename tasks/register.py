"""Step 4, register: one MLflow run, a new model version, and the promotion decision.

Idempotent: the run is keyed by the training checkpoint, so retrying this
task (or re-running the flow on a finished training run) finds the run and
its version instead of creating a second one, and re-applies the decision.
"""

from __future__ import annotations

import logging
import warnings
from importlib import metadata
from pathlib import Path

from gan_model.checkpoint import load_checkpoint
from gan_model.config import GanflowConfig, flat_params, to_yaml
from tasks.registry import CHALLENGER, CHAMPION, DECISION_TAG, mlflow_client, set_alias
from tasks.train import local_checkpoint
from tasks.types import DatasetVersion, EvalResult, Registration, TrainResult

log = logging.getLogger("ganflow.register")

PYFUNC_FILE = Path(__file__).with_name("pyfunc_generator.py")
# The hash of the evaluation protocol as configured (before the weights are resolved): with the
# data set version and the training run name it says "this run would compute nothing new".
EVAL_CONFIG_TAG = "ganflow.eval_protocol_config"
GAN_MODEL_DIR = Path(__file__).resolve().parent.parent / "gan_model"


def _q(value: str) -> str:
    return value.replace("'", "\\'")


def _log_run(client, run_id: str, cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult,
             evaluation: EvalResult) -> None:
    import mlflow
    from mlflow.entities import Metric, Param

    params = [Param(k, v[:6000]) for k, v in flat_params(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    history = trained.history or load_checkpoint(local_checkpoint(trained.checkpoint_uri, cfg.data)).get("history", [])
    metrics = [Metric(f"train/{k}", float(v), 0, int(m["step"])) for m in history for k, v in m.items()
               if k != "step"]
    metrics += [Metric(k, float(getattr(evaluation, k)), 0, trained.steps) for k in ("fid", "kid", "kid_std")]
    for i in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[i:i + 900])
    client.log_artifact(run_id, evaluation.sample_grid, "samples")
    client.log_text(run_id, to_yaml(cfg), "config.yaml")
    client.log_dict(run_id, evaluation.protocol, "fid_protocol.json")
    client.log_dict(run_id, dataset.model_dump(), "dataset.json")
    with mlflow.start_run(run_id=run_id):
        try:
            from mlflow.data.meta_dataset import MetaDataset
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            mlflow.log_input(MetaDataset(resolve_dataset_source(cfg.data.source), name=cfg.data.source,
                                         digest=dataset.version), context="training")
        except Exception as err:  # lineage is nice to have, never worth failing a run for
            log.warning("could not log the dataset input: %s", err)
    client.set_tag(run_id, "ganflow.logged", "1")


def _log_model(run_id: str, cfg: GanflowConfig, evaluation: EvalResult):
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    r, c = cfg.data.resolution, cfg.data.channels
    signature = ModelSignature(inputs=Schema([ColSpec("long", "seed")]),
                               outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, r, r, c))]))
    reqs = [f"{p}=={metadata.version(p)}" for p in ("mlflow", "torch", "numpy", "pillow", "pydantic", "pyyaml")]
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hints.*")  # the signature is explicit
        return mlflow.pyfunc.log_model(
            name="generator", python_model=str(PYFUNC_FILE), artifacts={"generator": evaluation.generator_path},
            code_paths=[str(GAN_MODEL_DIR)], signature=signature, pip_requirements=reqs,
            input_example=pd.DataFrame({"seed": np.arange(2, dtype=np.int64)}))


def decide(client, name: str, version: str, evaluation: EvalResult, promote: bool) -> tuple[str, str]:
    from mlflow.exceptions import MlflowException

    if not promote:
        return "", "registry.promote is false: no alias set"
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        # The stores answer a missing alias with RESOURCE_DOES_NOT_EXIST or (SQL
        # and file stores) INVALID_PARAMETER_VALUE "alias ... not found". Anything
        # else, an outage above all, must not read as "no champion yet".
        missing = err.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            err.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(err))
        if not missing:
            raise
        return CHAMPION, "no champion yet"
    if str(champ.version) == version:
        return CHAMPION, "already the champion"
    champ_fid = float(champ.tags.get("ganflow.fid", "inf"))
    if champ.tags.get("ganflow.protocol_key") != evaluation.protocol["key"]:
        return CHALLENGER, (f"not comparable with champion v{champ.version} (evaluated under another protocol: "
                            f"data set, weights or sample counts differ); compare and use `ganflow promote`")
    if evaluation.fid < champ_fid:
        return CHAMPION, f"FID {evaluation.fid:.4g} beats champion v{champ.version}'s {champ_fid:.4g}"
    return CHALLENGER, f"FID {evaluation.fid:.4g} does not beat champion v{champ.version}'s {champ_fid:.4g}"


def register_generator(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult,
                       evaluation: EvalResult, flow_run_id: str | None = None) -> Registration:
    import mlflow

    reg = cfg.registry
    client, exp_id, uri = mlflow_client(reg)
    name = reg.model_name

    # 1. Find or create the run for this checkpoint under this evaluation
    #    protocol (the idempotency key).
    runs = client.search_runs([exp_id], filter_string=(
        f"tags.`ganflow.checkpoint` = '{_q(trained.checkpoint_uri)}' and "
        f"tags.`ganflow.protocol_key` = '{evaluation.protocol['key']}'"), max_results=1)
    if runs:
        run_id = runs[0].info.run_id
    else:
        tags = {"ganflow.checkpoint": trained.checkpoint_uri, "ganflow.dataset_version": dataset.version,
                "ganflow.train_run": trained.run_name, "ganflow.protocol_key": evaluation.protocol["key"],
                EVAL_CONFIG_TAG: eval_config_key(cfg)}
        if flow_run_id:
            tags["prefect.flow_run_id"] = flow_run_id
        run_id = client.create_run(exp_id, run_name=trained.run_name, tags=tags).info.run_id
    run = client.get_run(run_id)
    if run.data.tags.get("ganflow.logged") != "1":
        _log_run(client, run_id, cfg, dataset, trained, evaluation)

    # 2. One registered version per run.
    versions = client.search_model_versions(f"name='{_q(name)}' and run_id='{run_id}'")
    if versions:
        version = str(versions[0].version)
    else:
        info = _log_model(run_id, cfg, evaluation)
        mv = mlflow.register_model(info.model_uri, name, tags={
            "ganflow.fid": repr(evaluation.fid), "ganflow.kid": repr(evaluation.kid),
            "ganflow.protocol_key": evaluation.protocol["key"],
            "ganflow.fid_comparable": str(evaluation.comparable).lower(),
            "ganflow.weights_sha256": evaluation.protocol["weights_sha256"],
            "ganflow.dataset_version": dataset.version, "ganflow.run_id": run_id})
        version = str(mv.version)
    if run.info.status != "FINISHED":
        client.set_terminated(run_id, "FINISHED")

    # 3. Promote only when better under the same protocol. Each version is
    #    decided once: a re-run must not undo a manual promotion or rollback.
    current = client.get_model_version(name, version)
    decided = current.tags.get(DECISION_TAG)
    if decided is not None:
        aliases = current.aliases
        alias = CHAMPION if CHAMPION in aliases else CHALLENGER if CHALLENGER in aliases else ""
        log.info("%s v%s was decided before (%s): aliases left as they are", name, version, decided)
        return Registration(model_name=name, model_version=version, alias=alias, mlflow_run_id=run_id,
                            reason=f"decided before: {decided}", tracking_uri=uri, experiment_id=exp_id,
                            fid=evaluation.fid, kid=evaluation.kid)
    alias, reason = decide(client, name, version, evaluation, reg.promote)
    if alias:
        set_alias(client, name, version, alias)
    client.set_model_version_tag(name, version, DECISION_TAG, reason)
    log.info("registered %s v%s -> %s (%s)", name, version, alias or "no alias", reason)
    return Registration(model_name=name, model_version=version, alias=alias, mlflow_run_id=run_id,
                        reason=reason, tracking_uri=uri, experiment_id=exp_id, fid=evaluation.fid, kid=evaluation.kid)


def eval_config_key(cfg: GanflowConfig) -> str:
    from gan_model.config import identity_hash
    return identity_hash(cfg.eval.protocol())


def register_exclusively(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult,
                         evaluation: EvalResult, flow_run_id: str | None = None) -> Registration:
    """register_generator, one flow run at a time per model name: the champion comparison and
    the alias it sets are never interleaved with another run's."""
    from tasks.locks import exclusive, limit_name

    with exclusive(limit_name("register", cfg.registry.model_name)):
        return register_generator(cfg, dataset, trained, evaluation, flow_run_id)


def find_registered(cfg: GanflowConfig, dataset: DatasetVersion) -> Registration | None:
    """The version registered for this data set version, training run and evaluation protocol
    configuration, if any: a run with the same inputs would compute nothing new."""
    from tasks.train import run_name

    reg = cfg.registry
    client, exp_id, uri = mlflow_client(reg)
    runs = client.search_runs([exp_id], filter_string=(
        f"tags.`ganflow.train_run` = '{_q(run_name(cfg, dataset))}' and "
        f"tags.`{EVAL_CONFIG_TAG}` = '{eval_config_key(cfg)}' and tags.`ganflow.logged` = '1'"),
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run_id = runs[0].info.run_id
    versions = client.search_model_versions(f"name='{_q(reg.model_name)}' and run_id='{run_id}'")
    if not versions:
        return None
    mv = client.get_model_version(reg.model_name, str(versions[0].version))
    alias = CHAMPION if CHAMPION in mv.aliases else CHALLENGER if CHALLENGER in mv.aliases else ""
    fid, kid = mv.tags.get("ganflow.fid"), mv.tags.get("ganflow.kid")
    return Registration(model_name=reg.model_name, model_version=str(mv.version), alias=alias, mlflow_run_id=run_id,
                        reason=f"unchanged since v{mv.version}: {mv.tags.get(DECISION_TAG, '')}", tracking_uri=uri,
                        experiment_id=exp_id, fid=float(fid) if fid else None, kid=float(kid) if kid else None)
