"""The MLflow registry as ganflow uses it: the client, model URIs, aliases, generator weights.

Shared by the register step and by the commands that read or change the registry
(`promote`, `sample`, `evaluate`), so each of them is a thin call.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gan_model.config import STATE_DIR, RegistryConfig
from gan_model.errors import GanflowError, TransientError, UsageError

CHAMPION, CHALLENGER = "champion", "challenger"
DECISION_TAG = "ganflow.decision"
MODEL_URI = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))")


def tracking_uri(reg: RegistryConfig) -> str:
    """The config's URI, else MLFLOW_TRACKING_URI, else SQLite in the project-local state folder."""
    uri = reg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    STATE_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{(STATE_DIR / 'mlflow.db').resolve()}"


def mlflow_client(reg: RegistryConfig):
    """-> (client, experiment id, tracking URI); an unreachable server is a one-line error."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(reg)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    try:
        exp = client.get_experiment_by_name(reg.experiment)
    except Exception as err:  # unreachable server, bad URI, auth... (a retry may find it back up)
        raise TransientError(f"cannot reach the MLflow tracking server at {uri} ({type(err).__name__}): "
                           f"check MLFLOW_TRACKING_URI or registry.tracking_uri") from None
    if exp is None:
        location = None
        if uri.startswith("sqlite:///") and not reg.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
            location = (STATE_DIR / "mlartifacts").resolve().as_uri()
        exp_id = client.create_experiment(reg.experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    return client, exp_id, uri


def model_version(client, model_uri: str, where: str):
    """The ModelVersion named by models:/NAME@ALIAS or models:/NAME/VERSION."""
    from mlflow.exceptions import MlflowException

    match = MODEL_URI.fullmatch(model_uri)
    if not match:
        raise UsageError(f"--model {model_uri!r}: use models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, number = match.groups()
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException:
        raise UsageError(f"no model {model_uri} at {where}: list versions in the MLflow UI") from None


def set_alias(client, name: str, version: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    client.set_registered_model_alias(name, alias, version)
    if alias == CHAMPION:  # one version should not be champion and challenger at once
        try:
            challenger = client.get_model_version_by_alias(name, CHALLENGER)
        except MlflowException:  # no challenger: nothing to clear
            return
        if str(challenger.version) == version:
            client.delete_registered_model_alias(name, CHALLENGER)


def promote(reg: RegistryConfig, name: str, version: str, alias: str) -> dict:
    """Set `alias` on a version by hand (promotion or rollback), recorded as its decision, so a
    later pipeline run leaves it as it is."""
    client, _, uri = mlflow_client(reg)
    mv = model_version(client, f"models:/{name}/{version}", uri)
    set_alias(client, name, str(mv.version), alias)
    client.set_model_version_tag(name, str(mv.version), DECISION_TAG, f"manual: @{alias}")
    return {"model_name": name, "model_version": str(mv.version), "alias": alias}


def download_generator(model_uri: str, dest: Path) -> Path:
    """The generator weights file of a registered model, copied to `dest`. Only weights are
    fetched: loading them (weights_only) runs no code that came from the registry."""
    import tempfile

    import mlflow

    from tasks.storage import atomic_write

    with tempfile.TemporaryDirectory(prefix="ganflow-model-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        except Exception as err:
            raise GanflowError(f"cannot download the weights of {model_uri} ({type(err).__name__}): "
                               f"check that the version exists and the artifact store is reachable") from None
        found = sorted(local.rglob("generator.pt"))
        if not found:
            raise GanflowError(f"{model_uri} holds no generator.pt: it was not registered by ganflow")
        return atomic_write(dest, found[0].read_bytes())
