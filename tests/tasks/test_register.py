"""Promotion decisions against a real MLflow registry on SQLite."""

import pytest

from gan_model.config import RegistryConfig
from tasks.register import decide
from tasks.registry import CHALLENGER, CHAMPION, mlflow_client, set_alias
from tasks.types import EvalResult


def evaluation(fid, key="A"):
    return EvalResult(fid=fid, kid=0.1, kid_std=0.01, n_generated=10, n_reference=10,
                      protocol={"key": key, "weights_sha256": "0" * 64}, comparable=False,
                      sample_grid="x.png", generator_path="g.pt")


@pytest.fixture()
def registry(tmp_path):
    client, exp_id, _ = mlflow_client(RegistryConfig(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="t"))
    client.create_registered_model("gen")

    def add_version(fid, key="A"):
        run = client.create_run(exp_id)
        mv = client.create_model_version("gen", f"runs:/{run.info.run_id}/generator", run.info.run_id,
                                         tags={"ganflow.fid": repr(fid), "ganflow.protocol_key": key})
        return str(mv.version)
    return client, add_version


def test_first_version_becomes_champion_then_only_better_ones(registry):
    client, add = registry
    v1 = add(10.0)
    assert decide(client, "gen", v1, evaluation(10.0), True)[0] == CHAMPION
    set_alias(client, "gen", v1, CHAMPION)
    v2 = add(5.0)
    alias, reason = decide(client, "gen", v2, evaluation(5.0), True)
    assert alias == CHAMPION and "beats champion v1" in reason
    v3 = add(20.0)
    alias, reason = decide(client, "gen", v3, evaluation(20.0), True)
    assert alias == CHALLENGER and "does not beat" in reason


def test_fids_under_another_protocol_are_not_compared(registry):
    client, add = registry
    v1 = add(10.0, key="A")
    set_alias(client, "gen", v1, CHAMPION)
    v2 = add(1.0, key="B")  # far better number, but other weights or sample counts
    alias, reason = decide(client, "gen", v2, evaluation(1.0, key="B"), True)
    assert alias == CHALLENGER and "not comparable" in reason


def test_a_registry_outage_is_not_read_as_no_champion(registry, monkeypatch):
    from mlflow.exceptions import MlflowException
    client, add = registry
    v1 = add(10.0)

    def outage(*a, **k):
        raise MlflowException("backend unavailable", error_code="TEMPORARILY_UNAVAILABLE")
    monkeypatch.setattr(client, "get_model_version_by_alias", outage)
    with pytest.raises(MlflowException):
        decide(client, "gen", v1, evaluation(10.0), True)


def test_promoting_to_champion_clears_challenger_on_the_same_version(registry):
    client, add = registry
    v1 = add(10.0)
    set_alias(client, "gen", v1, CHALLENGER)
    set_alias(client, "gen", v1, CHAMPION)
    assert client.get_model_version("gen", v1).aliases == [CHAMPION]
    assert decide(client, "gen", v1, evaluation(10.0), False)[0] == ""
