"""Promotion decisions against a real MLflow registry on SQLite, and what the registry code
promises without one (credentials, requirements). Registration end to end, rollback, retries,
sampling and serving run against a tracking server in test_registry_server.py."""

import pytest

from gan_model.config import RegistryConfig
from tasks.register import decide
from tasks.registry import CHALLENGER, CHAMPION, mlflow_client, record_evaluation, set_alias
from tasks.types import EvalResult

POLICY = RegistryConfig()


def evaluation(fid, key="A"):
    return EvalResult(fid=fid, kid=0.1, kid_std=0.01, n_generated=10, n_reference=10,
                      protocol={"key": key, "weights_sha256": "0" * 64}, comparable=False,
                      sample_grid="x.png", generator_path="g.pt")


@pytest.fixture(scope="module")
def sqlite_registry(tmp_path_factory):
    # One database for the module: creating one (MLflow's migrations) takes seconds.
    db = tmp_path_factory.mktemp("registry") / "m.db"
    return mlflow_client(RegistryConfig(tracking_uri=f"sqlite:///{db}", experiment="t"))[:2]


@pytest.fixture()
def registry(sqlite_registry, request):
    """(client, add_version(fid, key), a registered model name of this test's own)."""
    client, exp_id = sqlite_registry
    name = f"gen-{request.node.name}"
    client.create_registered_model(name)

    def add_version(fid, key="A"):
        run = client.create_run(exp_id)
        mv = client.create_model_version(name, f"runs:/{run.info.run_id}/generator", run.info.run_id,
                                         tags={"ganflow.fid": repr(fid), "ganflow.protocol_key": key})
        return str(mv.version)
    return client, add_version, name


def test_first_version_becomes_champion_then_only_better_ones(registry):
    client, add, name = registry
    v1 = add(10.0)
    assert decide(client, name, v1, evaluation(10.0), POLICY)[0] == CHAMPION
    set_alias(client, name, v1, CHAMPION)
    v2 = add(5.0)
    alias, reason = decide(client, name, v2, evaluation(5.0), POLICY)
    assert alias == CHAMPION and "beats champion v1" in reason
    v3 = add(20.0)
    alias, reason = decide(client, name, v3, evaluation(20.0), POLICY)
    assert alias == CHALLENGER and "does not beat" in reason


def test_fids_under_another_protocol_are_not_compared(registry):
    client, add, name = registry
    v1 = add(10.0, key="A")
    set_alias(client, name, v1, CHAMPION)
    v2 = add(1.0, key="B")  # far better number, but other weights or sample counts
    alias, reason = decide(client, name, v2, evaluation(1.0, key="B"), POLICY)
    assert alias == CHALLENGER and "not comparable" in reason


def test_a_registry_outage_is_not_read_as_no_champion(registry, monkeypatch):
    from mlflow.exceptions import MlflowException
    client, add, name = registry
    v1 = add(10.0)

    def outage(*a, **k):
        raise MlflowException("backend unavailable", error_code="TEMPORARILY_UNAVAILABLE")
    monkeypatch.setattr(client, "get_model_version_by_alias", outage)
    with pytest.raises(MlflowException):
        decide(client, name, v1, evaluation(10.0), POLICY)


def test_promoting_to_champion_clears_challenger_on_the_same_version(registry):
    client, add, name = registry
    v1 = add(10.0)
    set_alias(client, name, v1, CHALLENGER)
    set_alias(client, name, v1, CHAMPION)
    assert client.get_model_version(name, v1).aliases == [CHAMPION]
    assert decide(client, name, v1, evaluation(10.0), RegistryConfig(promote=False))[0] == ""


def test_min_improvement_is_a_relative_margin(registry):
    client, add, name = registry
    set_alias(client, name, add(10.0), CHAMPION)
    policy = RegistryConfig(min_improvement=0.1)
    v2 = add(9.5)
    alias, reason = decide(client, name, v2, evaluation(9.5), policy)  # 5% better, 10% required
    assert alias == CHALLENGER and "min_improvement" in reason
    assert decide(client, name, add(8.9), evaluation(8.9), policy)[0] == CHAMPION


def test_the_champion_is_reevaluated_under_a_new_protocol_only_when_asked(registry):
    client, add, name = registry
    v1 = add(10.0, key="A")
    set_alias(client, name, v1, CHAMPION)
    v2 = add(8.0, key="B")
    asked = []

    def reevaluate(champ):
        asked.append(str(champ.version))
        record_evaluation(client, name, str(champ.version), "B", 9.0, 0.1)
        return 9.0

    alias, reason = decide(client, name, v2, evaluation(8.0, key="B"), POLICY, reevaluate)
    assert alias == CHAMPION and "re-evaluated" in reason and asked == [v1]
    # Recorded on the champion: the next decision under protocol B compares without evaluating.
    alias, _ = decide(client, name, add(9.5, key="B"), evaluation(9.5, key="B"), POLICY, reevaluate)
    assert alias == CHALLENGER and asked == [v1]


def test_credentials_in_the_tracking_uri_move_to_mlflows_variables(monkeypatch):
    from tasks.registry import tracking_uri
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://ci%40example:s3cr%2Ft@mlflow.example.com:8443/path")
    assert tracking_uri(RegistryConfig()) == "https://mlflow.example.com:8443/path"
    import os
    assert os.environ["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com:8443/path"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("ci@example", "s3cr/t")


def test_the_served_model_requirements_install_anywhere(monkeypatch):
    from importlib import metadata

    from tasks.register import serving_requirements
    reqs = serving_requirements()
    assert [r.split(">")[0].split("<")[0].split("=")[0] for r in reqs] == ["mlflow", "torch", "numpy", "pillow"]
    assert all("==" not in r and "+" not in r for r in reqs), reqs  # no exact pin, no local build label
    # Without ganflow's own metadata: lower bounds from the installed releases, local labels dropped.
    monkeypatch.setattr(metadata, "requires", lambda name: (_ for _ in ()).throw(metadata.PackageNotFoundError(name)))
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda p: "2.14.1+cpu" if p == "torch" else real_version(p))
    assert "torch>=2.14" in serving_requirements()


def test_a_sqlite_registry_keeps_its_artifacts_beside_its_database(tmp_path, workdir):
    """MLflow's own default for a SQLite store is ./mlruns in whatever folder the command runs in;
    ganflow's is mlartifacts/ beside the database file, wherever that is."""
    db = tmp_path / "elsewhere" / "registry.db"
    db.parent.mkdir()
    client, exp_id = mlflow_client(RegistryConfig(tracking_uri=f"sqlite:///{db}?timeout=20", experiment="beside"))[:2]
    location = client.get_experiment(exp_id).artifact_location
    assert location == (db.parent / "mlartifacts").as_uri()
    run = client.create_run(exp_id)
    (workdir / "note.txt").write_text("x")
    client.log_artifact(run.info.run_id, str(workdir / "note.txt"))
    assert (db.parent / "mlartifacts" / run.info.run_id / "artifacts" / "note.txt").is_file()
    assert not (workdir / "mlruns").exists()  # the folder the command ran in
