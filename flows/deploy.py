"""`ganflow deploy`: the pipeline as Prefect deployments that workers run, written as a
`prefect.yaml` (reviewable, versioned with the project) and optionally applied.

Two deployments of the same flow and schedule:

- `<name>` on a **process** work pool: a `prefect worker start --pool ganflow-process` on a
  machine with this checkout runs each flow run as a subprocess (one GPU host, a VM);
- `<name>-k8s` on a **kubernetes** work pool: each flow run is a Job from the ganflow image,
  with S3 credentials from a Kubernetes Secret (never inlined) and the heavy work sent to the Ray
  cluster at RAY_ADDRESS. Its base job template is written beside the file.

`--apply` creates the process pool when missing and registers the process deployment with
`prefect deploy`; the Kubernetes pool is created on the cluster side, by infra/k8s's Prefect worker
from infra/k8s/base-job-template.json, the template written here (README, "Deploying it").
"""

from __future__ import annotations

import copy
import json
from importlib import metadata, resources
from pathlib import Path

import yaml

from gan_model.config import GanflowConfig
from gan_model.errors import GanflowError

PROJECT_DIR = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/pipeline.py:ganflow_pipeline"
PROCESS_POOL, K8S_POOL = "ganflow-process", "ganflow-kubernetes"
K8S_TEMPLATE_FILE = "kubernetes-base-job-template.json"
# Where the services of a cluster deployment are, by their in-cluster names (infra/k8s): KubeRay
# names the head's Service <RayCluster name>-head-svc. The S3 variables come from the Secret and
# PREFECT_API_URL from the worker that starts the Job (flows.environment.OUTSIDE_SYSTEMS); the Ray
# cluster requires its token (KubeRay authOptions), mounted from its Secret by the template.
CLUSTER_ENV = {"RAY_ADDRESS": "ray://ganflow-ray-head-svc:10001", "MLFLOW_TRACKING_URI": "http://ganflow-mlflow:5000",
               "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/etc/ray-auth/auth_token",
               "PREFECT_LOGGING_EXTRA_LOGGERS": "ganflow"}


def kubernetes_base_job_template() -> dict:
    """A flow-run Job: the ganflow image, env from variables, S3 credentials from a Secret (envFrom),
    the Ray cluster's auth token mounted from KubeRay's Secret. One file, infra/k8s/base-job-template.json,
    is both what this writes and what the cluster's Prefect worker creates its pool with."""
    return json.loads(resources.files("infra").joinpath("k8s/base-job-template.json").read_text())


def write_deployments(cfg: GanflowConfig, cron: str, out: Path, *, name: str = "ganflow-nightly",
                      timezone: str = "UTC", image: str | None = None) -> Path:
    """Write `prefect.yaml` (and the Kubernetes base job template beside it)."""
    image = image or f"ganflow:{metadata.version('ganflow')}"
    schedule = [{"cron": cron, "timezone": timezone, "active": True}]
    parameters = {"config": cfg.model_dump(mode="json"), "force": False}
    common = {"entrypoint": ENTRYPOINT, "tags": ["ganflow"], "parameters": parameters, "schedules": schedule,
              "concurrency_limit": 1, "description": f"ganflow on {cfg.data.source}, {cron} ({timezone})"}
    doc = {
        "name": "ganflow",
        "prefect-version": metadata.version("prefect"),
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_DIR)}}],
        "deployments": [
            {"name": name, **copy.deepcopy(common),
             "work_pool": {"name": PROCESS_POOL, "job_variables": {"env": {"PREFECT_LOGGING_EXTRA_LOGGERS": "ganflow"}}}},
            {"name": f"{name}-k8s", **copy.deepcopy(common),
             "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/ganflow"}}],
             "work_pool": {"name": K8S_POOL, "job_variables": {"image": image, "env": CLUSTER_ENV}}},
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Written by `ganflow deploy`; apply with `ganflow deploy --apply` (process pool) or\n"
              f"# `prefect deploy --all --prefect-file {out.name}` once both work pools exist.\n")
    out.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    (out.parent / K8S_TEMPLATE_FILE).write_text(json.dumps(kubernetes_base_job_template(), indent=2) + "\n")
    return out


def apply_process_deployment(prefect_file: Path, name: str) -> None:
    """Create the process work pool when missing, then register the deployment `name` exactly as
    `prefect_file` describes it (the file stays the reviewed source of truth)."""
    from prefect import Flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.schedules import Cron

    doc = yaml.safe_load(Path(prefect_file).read_text())
    spec = next((d for d in doc.get("deployments", []) if d.get("name") == name), None)
    if spec is None or spec["work_pool"]["name"] != PROCESS_POOL:
        raise GanflowError(f"{prefect_file} has no process-pool deployment {name!r}: write it with `ganflow deploy`")
    try:
        with get_client(sync_client=True) as client:
            try:
                client.create_work_pool(WorkPoolCreate(name=PROCESS_POOL, type="process"))
            except ObjectAlreadyExists:
                pass
        flow = Flow.from_source(source=str(PROJECT_DIR), entrypoint=spec["entrypoint"])
        flow.deploy(name=name, work_pool_name=PROCESS_POOL, job_variables=spec["work_pool"].get("job_variables"),
                    schedules=[Cron(s["cron"], timezone=s.get("timezone")) for s in spec.get("schedules", [])],
                    parameters=spec.get("parameters"), concurrency_limit=spec.get("concurrency_limit"),
                    tags=spec.get("tags"), description=spec.get("description"), print_next_steps=False)
    except GanflowError:
        raise
    except Exception as err:  # an unreachable API, a refused deployment
        raise GanflowError(f"cannot register deployment {name!r} ({type(err).__name__}: {err}): "
                           f"check PREFECT_API_URL and {prefect_file}") from None
