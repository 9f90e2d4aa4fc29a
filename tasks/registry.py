"""The MLflow registry as ganflow uses it: the client, model URIs, aliases and their history,
the versions' evaluation tags, generator weights.

Shared by the register step and by the commands that read or change the registry
(`promote`, `models`, `sample`, `evaluate`, `serve-model`), so each of them is a thin call.

Version tags (all `ganflow.*`): `fid`, `kid`, `protocol_key` (the evaluation protocol of the
registration), `fid.<protocol key>` / `kid.<protocol key>` (every evaluation under any protocol,
re-evaluations included), `dataset_version`, `decision` (the reason) and `decided_alias`, written after the alias moved;
`decision_intent` is written before it, so a retry after a failure in between applies the
decision instead of deciding again.
The registered model's `ganflow.champion_history` lists the champions in order, for rollback.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gan_model.config import STATE_DIR, RegistryConfig, strip_userinfo
from gan_model.errors import GanflowError, TransientError, UsageError

CHAMPION, CHALLENGER = "champion", "challenger"
DECISION_TAG = "ganflow.decision"
DECIDED_ALIAS_TAG, INTENT_TAG = "ganflow.decided_alias", "ganflow.decision_intent"
ROLLED_BACK_TAG = "ganflow.rolled_back"
HISTORY_TAG = "ganflow.champion_history"
MODEL_URI = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))")


def credentials_to_environment(uri: str) -> str:
    """Split `https://user:password@host` into the URI without credentials, which is what ganflow
    uses, shows, logs and stores from then on, and MLFLOW_TRACKING_USERNAME/PASSWORD, where MLflow
    (and the `mlflow` processes ganflow starts) read them. Variables already set win."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username or ""))
    os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password or ""))
    clean = strip_userinfo(uri)
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:
        os.environ["MLFLOW_TRACKING_URI"] = clean
    return clean


def tracking_uri(reg: RegistryConfig) -> str:
    """The config's URI, else MLFLOW_TRACKING_URI (credentials moved out of it), else SQLite in
    the project-local state folder."""
    uri = reg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return credentials_to_environment(uri)
    STATE_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{(STATE_DIR / 'mlflow.db').resolve()}"


def sqlite_artifacts(uri: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: mlartifacts/ beside the
    database file (MLflow's own default, ./mlruns, is in whatever folder the command runs in);
    None (the server's or store's default) for any other store."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:///:memory:"):
        return None
    database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return (database.parent / "mlartifacts").resolve().as_uri()


def mlflow_client(reg: RegistryConfig):
    """-> (client, experiment id, tracking URI); an unreachable server is a one-line error."""
    import mlflow
    from mlflow import MlflowClient

    # MLflow prints "View run ... at: URL" on stdout when a run ends on a server; stdout is for
    # results (--json promises exactly one object), and ganflow names the run itself.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
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
        exp_id = client.create_experiment(reg.experiment, artifact_location=sqlite_artifacts(uri))
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
        raise UsageError(f"no model {model_uri} at {where}: list versions with `ganflow models {name}`") from None


def alias_missing(err) -> bool:
    """Whether an MlflowException says "no such alias". The stores answer a missing alias with
    RESOURCE_DOES_NOT_EXIST or (SQL and file stores) INVALID_PARAMETER_VALUE "alias ... not
    found"; anything else, an outage above all, must not read as "no champion"."""
    return err.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        err.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(err))


def version_with_alias(client, name: str, alias: str):
    """The ModelVersion holding `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if not alias_missing(err):
            raise
        return None


def champion_history(client, name: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


def set_alias(client, name: str, version: str, alias: str) -> None:
    """Move `alias` to `version`; a new champion is appended to the champion history. Each write
    is idempotent, so a retry after a failure half-way finishes the job."""
    client.set_registered_model_alias(name, alias, version)
    if alias != CHAMPION:
        return
    history = champion_history(client, name)
    if not history or history[-1] != version:
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join((history + [version])[-500:]))
    challenger = version_with_alias(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:  # not champion and challenger at once
        client.delete_registered_model_alias(name, CHALLENGER)


def record_decision(client, name: str, version: str, alias: str, reason: str) -> None:
    """The decision as an intent first, then the alias, then the decision itself (the commit): a
    failure in between leaves an intent that a retry applies instead of deciding again."""
    client.set_model_version_tag(name, version, INTENT_TAG, json.dumps({"alias": alias, "reason": reason[:4000]}))
    if alias:
        set_alias(client, name, version, alias)
    client.set_model_version_tag(name, version, DECIDED_ALIAS_TAG, alias or "none")
    client.set_model_version_tag(name, version, DECISION_TAG, reason[:5000])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def promote(reg: RegistryConfig, name: str, version: str | None = None, alias: str | None = None,
            rollback: bool = False) -> dict:
    """By hand: set `alias` on a version, or (rollback) give @champion back to the previous
    champion. Either is recorded in the versions' tags as their decision, so a later pipeline run
    leaves it as it is."""
    if rollback == (alias is not None) or rollback == (version is not None):
        raise UsageError("use `ganflow promote NAME VERSION --alias ALIAS` or `ganflow promote NAME --rollback`")
    client, _, uri = mlflow_client(reg)
    if rollback:
        return _rollback(client, name, uri)
    mv = model_version(client, f"models:/{name}/{version}", uri)
    record_decision(client, name, str(mv.version), alias, f"by hand on {_now()}: @{alias}")
    return {"model_name": name, "model_version": str(mv.version), "alias": alias}


def _rollback(client, name: str, uri: str) -> dict:
    from mlflow.exceptions import MlflowException

    current = version_with_alias(client, name, CHAMPION) if _registered(client, name) else None
    if current is None:
        raise UsageError(f"{name} has no @champion at {uri}: nothing to roll back (see `ganflow models {name}`)")
    current = str(current.version)
    history = champion_history(client, name)
    while history and history[-1] == current:
        history.pop()
    while history:  # the latest earlier champion that still exists
        try:
            client.get_model_version(name, history[-1])
            break
        except MlflowException:
            history.pop()
    if not history:
        raise UsageError(f"{name} v{current} is the first @champion on record: promote another version by hand "
                         f"with `ganflow promote {name} VERSION --alias champion`")
    previous, when = history[-1], _now()
    client.set_model_version_tag(name, current, ROLLED_BACK_TAG, when)
    record_decision(client, name, current, "", f"rolled back by hand on {when}: @champion returned to v{previous}")
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    challenger = version_with_alias(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == previous:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, previous, "ganflow.restored", f"{when} (rollback from v{current})")
    return {"model_name": name, "model_version": previous, "alias": CHAMPION, "rolled_back": current}


def _registered(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def fid_under(mv, protocol_key: str) -> float | None:
    """The version's FID under an evaluation protocol, if it was ever evaluated under it."""
    value = mv.tags.get(f"ganflow.fid.{protocol_key}")
    if value is None and mv.tags.get("ganflow.protocol_key") == protocol_key:
        value = mv.tags.get("ganflow.fid")
    return float(value) if value is not None else None


def record_evaluation(client, name: str, version: str, protocol_key: str, fid: float, kid: float) -> None:
    """Keep an evaluation of a version under a protocol, so later decisions can compare with it."""
    client.set_model_version_tag(name, version, f"ganflow.fid.{protocol_key}", repr(float(fid)))
    client.set_model_version_tag(name, version, f"ganflow.kid.{protocol_key}", repr(float(kid)))


def list_versions(reg: RegistryConfig, name: str) -> dict:
    """Every version of a registered model, newest first: aliases, FID/KID, protocol, data set
    version, creation date and decision (`ganflow models NAME`)."""
    client, _, uri = mlflow_client(reg)
    if not _registered(client, name):
        raise UsageError(f"no registered model {name!r} at {uri}: check the name (registry.model_name) "
                         f"and MLFLOW_TRACKING_URI")
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():  # versions found by search lack them
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        tags = mv.tags
        rows.append({
            "version": str(mv.version), "aliases": sorted(aliases.get(str(mv.version), [])),
            "fid": float(tags["ganflow.fid"]) if "ganflow.fid" in tags else None,
            "kid": float(tags["ganflow.kid"]) if "ganflow.kid" in tags else None,
            "protocol_key": tags.get("ganflow.protocol_key"), "fid_weights": tags.get("ganflow.fid_weights"),
            "fid_comparable": tags.get("ganflow.fid_comparable") == "true",
            "n_generated": tags.get("ganflow.n_generated"), "dataset_version": tags.get("ganflow.dataset_version"),
            "created": datetime.datetime.fromtimestamp(mv.creation_timestamp / 1000, datetime.timezone.utc)
            .isoformat(timespec="seconds"),
            "decision": tags.get(DECISION_TAG), "run_id": mv.run_id})
    rows.sort(key=lambda r: int(r["version"]), reverse=True)
    return {"model_name": name, "tracking_uri": uri, "versions": rows}


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
