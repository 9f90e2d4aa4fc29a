"""The deployment files (infra/compose.yaml, infra/k8s, the Dockerfile) checked without Docker, a
cluster or a network: against their schemas, and against the code they deploy, so a renamed
variable, Service or pin breaks a test instead of a night's training.

Validators, all offline: the Compose specification vendored by check-jsonschema; Kubernetes'
own schemas shipped by kubernetes-validate (strict: unknown fields are errors, as with
`kubectl apply --validate=strict`); KubeRay's RayCluster CRD schema vendored in schemas/ and
made strict the same way.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from flows.deploy import CLUSTER_ENV, K8S_POOL, PROCESS_POOL, kubernetes_base_job_template
from flows.environment import OUTSIDE_SYSTEMS, RAY_NODE_SYSTEMS
from tests.helpers import ROOT

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

INFRA, K8S = ROOT / "infra", ROOT / "infra" / "k8s"
COMPOSE, DOCKERFILE = INFRA / "compose.yaml", ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.33"  # the oldest minor release the manifests must apply to
RAYCLUSTER_SCHEMA = Path(__file__).with_name("schemas") / "ray.io_rayclusters.v1.json"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
PLACEHOLDER = "change-me"


def load_yaml(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict:
    return load_yaml(COMPOSE)[0]


def manifests() -> dict[str, list[dict]]:
    """Every resource file kustomization.yaml lists, by file name."""
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    return {name: load_yaml(K8S / name) for name in kustomization["resources"]}


def resource(kind: str, name: str | None = None) -> dict:
    return next(doc for docs in manifests().values() for doc in docs
                if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name))


def all_vars() -> set[str]:
    return {var for names in OUTSIDE_SYSTEMS.values() for var in names}


def ray_node_vars() -> set[str]:
    return {var for system in RAY_NODE_SYSTEMS for var in OUTSIDE_SYSTEMS[system]}


def env_file_keys(path: Path) -> set[str]:
    return {line.split("=", 1)[0].strip() for line in path.read_text().splitlines()
            if "=" in line and not line.lstrip().startswith("#")}


def containers(doc) -> list[dict]:
    """Every container spec anywhere in a resource (pod templates of Deployments, Jobs, RayClusters)."""
    found = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += value
            else:
                found += containers(value)
    elif isinstance(doc, list):
        for item in doc:
            found += containers(item)
    return found


def render_job_template(template: dict) -> dict:
    """The Job a Kubernetes worker would create from the template: each "{{ variable }}" replaced by
    its default, or by what Prefect fills in for a flow run (its name, command, env, labels)."""
    values = {name: spec.get("default") for name, spec in template["variables"]["properties"].items()}
    values.update(name="ganflow-nightly-abc12", command=["prefect", "flow-run", "execute"], labels={"app": "ganflow"},
                  env=[{"name": k, "value": v} for k, v in CLUSTER_ENV.items()])

    def fill(node):
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str):
            whole = re.fullmatch(r"\{\{ (\w+) \}\}", node)
            if whole:
                return values[whole.group(1)]
            return re.sub(r"\{\{ (\w+) \}\}", lambda m: str(values[m.group(1)]), node)
        return node

    return fill(template["job_configuration"]["job_manifest"])


# --- Schemas -------------------------------------------------------------------------------------

def compose_spec_errors(doc: dict) -> list[str]:
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_follows_the_compose_specification():
    assert compose_spec_errors(compose()) == []


def test_the_compose_check_rejects_a_misspelt_key():
    broken = compose()
    broken["services"]["mlflow"]["healthcheck"]["intervall"] = "5s"
    assert compose_spec_errors(broken)


def kubernetes_errors(doc: dict) -> list[str]:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{doc['kind']}/{doc['metadata'].get('name')}: {'.'.join(map(str, err.path))}: {err.message}"]
    return []


def test_kubernetes_manifests_follow_their_schemas():
    docs = [doc for docs in manifests().values() for doc in docs if doc["kind"] != "RayCluster"]
    assert {doc["kind"] for doc in docs} >= {"Namespace", "Deployment", "Service", "Role"}
    assert [e for doc in docs for e in kubernetes_errors(doc)] == []


def test_the_kubernetes_check_rejects_a_misplaced_field():
    deployment = resource("Deployment", "ganflow-mlflow")
    deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"] = {"secretRef": {"name": "x"}}  # not a list
    deployment["spec"]["replica"] = 1  # unknown field
    assert len(kubernetes_errors(deployment)) == 1


def strict(schema):
    """The CRD schema with unknown fields rejected wherever it lists the known ones (the API server
    would drop them silently: a misspelt field is a setting that never takes effect)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def raycluster_errors(doc: dict) -> list[str]:
    schema = strict(json.loads(RAYCLUSTER_SCHEMA.read_text())["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_raycluster_follows_kuberays_crd_schema_and_its_pods_kubernetes():
    cluster = resource("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    assert raycluster_errors(cluster) == []
    # The pod templates inside, against Kubernetes' own PodTemplateSpec (stricter than the CRD's copy).
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    pods = [{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray"}, "template": g["template"]}
            for g in groups]
    assert [e for pod in pods for e in kubernetes_errors(pod)] == []


def test_the_raycluster_check_rejects_a_misspelt_field():
    cluster = resource("RayCluster")
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 64
    assert raycluster_errors(cluster)


def test_the_flow_run_job_from_the_base_job_template_is_a_valid_job():
    job = render_job_template(kubernetes_base_job_template())
    assert job["kind"] == "Job" and kubernetes_errors(job) == []


def test_kustomization_lists_every_manifest_and_every_file_it_needs_exists():
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    files = [f for g in kustomization["configMapGenerator"] for f in g.get("files", [])]
    assert all((K8S / f).is_file() for f in files)
    # Secret files are git-ignored; each has a committed example with the same keys.
    envs = [f for g in kustomization["secretGenerator"] for f in g["envs"]]
    assert all((K8S / f"{f}.example").is_file() and git_ignored(K8S / f) for f in envs)
    assert git_ignored(INFRA / ".env") and not git_ignored(INFRA / ".env.example")
    assert "literals" not in str(kustomization["secretGenerator"])  # secrets never inline


# --- Images --------------------------------------------------------------------------------------

def images() -> dict[str, str]:
    """Every image the deployment files name, by where it is named."""
    found = {f"Dockerfile FROM {i}": line.split()[1] for i, line in enumerate(DOCKERFILE.read_text().splitlines())
             if line.upper().startswith("FROM ")}
    found.update({f"compose {name}": svc["image"] for name, svc in compose()["services"].items()})
    for name, docs in manifests().items():
        for doc in docs:
            for c in containers(doc):
                found[f"k8s {name} {doc['metadata']['name']}/{c['name']}"] = c["image"]
    found["base-job-template.json"] = kubernetes_base_job_template()["variables"]["properties"]["image"]["default"]
    for i, img in enumerate(load_yaml(K8S / "kustomization.yaml")[0]["images"]):
        found[f"kustomization images[{i}]"] = f"{img['newName']}:{img['newTag']}"
    return found


def is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest") and not tag.startswith("$")


def test_every_image_is_pinned_to_a_version():
    found = images()
    assert len(found) >= 10
    assert {where: img for where, img in found.items() if not is_pinned(img)} == {}
    for path in [COMPOSE, DOCKERFILE, *K8S.iterdir()]:
        assert not re.search(r":latest\b", path.read_text()), path


def test_the_image_check_rejects_latest_and_untagged_images():
    assert not is_pinned("ganflow:latest") and not is_pinned("postgres") and not is_pinned("localhost:5000/ganflow")
    assert is_pinned("postgres:16.4-bookworm") and is_pinned("registry.example:5000/ganflow:0.1.0")


def test_the_ganflow_image_everywhere_is_this_version():
    ganflow = {where: img for where, img in images().items() if img.split(":")[0].rsplit("/", 1)[-1] == "ganflow"}
    assert len(ganflow) >= 6
    assert set(ganflow.values()) == {f"ganflow:{VERSION}"}


# --- No secrets ----------------------------------------------------------------------------------

SECRET_NAME = r"(?:PASSWORD|SECRET|TOKEN|SECRET_KEY|ACCESS_KEY|API_KEY|auth_token|AWS_ACCESS_KEY_ID)"
# A value that is not a secret: a placeholder, an interpolation (${X}, $(X), "{{ x }}", $$X in a
# shell line), a Secret reference, or nothing.
NOT_A_VALUE = ("name", "ref", "path", "mode", "serviceaccounttoken")
SAFE_VALUE = re.compile(r"^(?:change-me|\$\{[^}]+\}|\$\(\w+\)|\$\$\w+|\"?\$\$?\{?\w+\}?\"?|\{\{ \w+ \}\}|)$")


def secret_findings(path: Path, text: str) -> list[str]:
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{path.name}:{n}"
        if re.search(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", line):
            found.append(f"{where}: an AWS access key id")
        if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", line):
            found.append(f"{where}: a private key")
        if re.search(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])", line) and "sha" not in line.lower():
            found.append(f"{where}: a 40-character key-like string")
        for user, password in re.findall(r"://([^:/@\s]+):([^@\s]+)@", line):
            if not SAFE_VALUE.match(password):
                found.append(f"{where}: a password in a URI")
        if line.lstrip().startswith("#"):
            continue
        for key, value in re.findall(rf"\b(\w*{SECRET_NAME}\w*)\s*[:=]\s*([^#]*)", line, flags=re.IGNORECASE):
            value = value.strip().strip("'\",")
            if key.lower().endswith(NOT_A_VALUE) or value in ("true", "false") or value.startswith(("{", "valueFrom")):
                continue  # a Secret's name, a file path, a switch, a reference
            if not SAFE_VALUE.match(value):
                found.append(f"{where}: {value[:4]}... is not a placeholder")
    return found


def git_ignored(path: Path) -> bool:
    """Whether one of .gitignore's path patterns (the files holding real credentials) covers it."""
    patterns = [line for line in (ROOT / ".gitignore").read_text().splitlines() if "/" in line.rstrip("/")]
    return any(fnmatch.fnmatch(str(path.relative_to(ROOT)), pattern.lstrip("/")) for pattern in patterns)


def deployment_files() -> list[Path]:
    """What is committed, or would be: the operator's own .env files are neither."""
    files = [DOCKERFILE, ROOT / ".dockerignore", *(p for p in INFRA.rglob("*") if p.is_file())]
    return [p for p in files if p.suffix != ".pyc" and "__pycache__" not in p.parts and not git_ignored(p)]


def test_no_secret_is_committed_in_the_deployment_files():
    files = deployment_files()
    assert {p.name for p in files} >= {"compose.yaml", ".env.example", "s3.env.example", "mlflow.yaml"}
    assert [f for p in files for f in secret_findings(p, p.read_text())] == []


def _fake_key(alphabet: str, length: int, seed: int) -> str:
    """A key-shaped string made at test time, so no key-like literal is ever committed."""
    import random
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(length))


_UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@pytest.mark.parametrize("leak", [
    f"AWS_ACCESS_KEY_ID=AKIA{_fake_key(_UPPER_DIGITS, 16, 1)}\n",
    f"AWS_SECRET_ACCESS_KEY={_fake_key(_UPPER_DIGITS.lower() + _UPPER_DIGITS + '/+', 40, 2)}\n",
    "      POSTGRES_PASSWORD: hunter2\n",
    "auth_token=3f9a0c\n",
    "MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:s3cret@db:5432/mlflow\n",
    "-----BEGIN RSA PRIVATE KEY-----\n",
])
def test_the_secret_scan_finds_a_leaked_value(leak):
    assert secret_findings(Path("x.env"), leak)


def test_committed_env_examples_hold_placeholders_only():
    for path in [INFRA / ".env.example", *K8S.glob("*.env.example")]:
        values = dict(line.split("=", 1) for line in path.read_text().splitlines()
                      if "=" in line and not line.startswith("#"))
        secret = {k: v for k, v in values.items() if re.search(SECRET_NAME, k, re.IGNORECASE)}
        secret.update({k: urlsplit(v).password for k, v in values.items() if urlsplit(v).password})
        assert secret and all(v == PLACEHOLDER for v in secret.values()), path


# --- The environment the code reads --------------------------------------------------------------

def test_compose_sets_what_ganflow_reads_for_the_flow_runs_and_the_ray_nodes():
    services = compose()["services"]
    worker_env = services["prefect-worker"]["environment"]
    assert set(worker_env) >= all_vars()
    for node in ("ray-head", "ray-worker"):
        assert set(services[node]["environment"]) >= ray_node_vars(), node
    # ... and the addresses name the services that serve them.
    for var in ("AWS_ENDPOINT_URL", "RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        assert urlsplit(worker_env[var]).hostname in services, var
    assert "--pool" in services["prefect-worker"]["command"] and PROCESS_POOL in services["prefect-worker"]["command"]


def test_compose_interpolates_only_variables_the_env_example_defines():
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used == env_file_keys(INFRA / ".env.example")


def test_kubernetes_sets_what_ganflow_reads_for_the_flow_runs_and_the_ray_nodes():
    template = kubernetes_base_job_template()
    secret = template["variables"]["properties"]["secret_name"]["default"]
    generated = {g["name"]: env_file_keys(K8S / f"{g['envs'][0]}.example")
                 for g in load_yaml(K8S / "kustomization.yaml")[0]["secretGenerator"]}
    # Flow-run Job: CLUSTER_ENV (prefect.yaml), the Secret (envFrom), PREFECT_API_URL from its worker.
    worker = resource("Deployment", "prefect-worker")["spec"]["template"]["spec"]["containers"][0]
    worker_env = {e["name"] for e in worker["env"]}
    assert set(CLUSTER_ENV) | generated[secret] | (worker_env & {"PREFECT_API_URL"}) >= all_vars()
    job = render_job_template(template)["spec"]["template"]["spec"]["containers"][0]
    assert job["envFrom"] == [{"secretRef": {"name": secret}}]
    # Every Ray node gets the S3 variables from the same Secret.
    for c in containers(resource("RayCluster")):
        assert {"secretRef": {"name": secret}} in c.get("envFrom", []), c["name"]
    assert generated[secret] >= ray_node_vars()


def test_cluster_env_names_the_services_infra_k8s_creates():
    cluster, mlflow = resource("RayCluster"), resource("Service", "ganflow-mlflow")
    ray = urlsplit(CLUSTER_ENV["RAY_ADDRESS"])
    assert ray.scheme == "ray" and ray.hostname == f"{cluster['metadata']['name']}-head-svc"
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert ray.port in {p["containerPort"] for p in head["ports"] if p["name"] == "client"}
    tracking = urlsplit(CLUSTER_ENV["MLFLOW_TRACKING_URI"])
    assert tracking.hostname == mlflow["metadata"]["name"] and tracking.port in {p["port"] for p in mlflow["spec"]["ports"]}
    # The Ray token: the Secret KubeRay reads is the one flow-run Jobs mount where RAY_AUTH_TOKEN_PATH looks.
    template = kubernetes_base_job_template()
    auth_secret = template["variables"]["properties"]["ray_auth_secret_name"]["default"]
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": auth_secret}
    assert "auth_token" in env_file_keys(K8S / "ray-auth.env.example")
    job = render_job_template(template)["spec"]["template"]["spec"]
    mount = next(m for m in job["containers"][0]["volumeMounts"] if m["name"] == "ray-auth")
    assert CLUSTER_ENV["RAY_AUTH_TOKEN_PATH"] == f"{mount['mountPath']}/auth_token"
    assert {"name": "ray-auth", "secret": {"secretName": auth_secret}} in job["volumes"]


def test_the_worker_creates_its_pool_from_the_template_ganflow_deploy_writes(tmp_path):
    from flows.deploy import K8S_TEMPLATE_FILE, write_deployments
    from gan_model.config import GanflowConfig

    write_deployments(GanflowConfig(), "0 3 * * *", tmp_path / "prefect.yaml")
    written = json.loads((tmp_path / K8S_TEMPLATE_FILE).read_text())
    assert written == json.loads((K8S / "base-job-template.json").read_text())
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    generator = next(g for g in kustomization["configMapGenerator"] if "base-job-template.json" in g.get("files", []))
    spec = resource("Deployment", "prefect-worker")["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    volume = next(v for v in spec["volumes"] if v.get("configMap", {}).get("name") == generator["name"])
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert args[args.index("--base-job-template") + 1] == f"{mount['mountPath']}/base-job-template.json"
    assert args[args.index("--pool") + 1] == K8S_POOL and args[args.index("--type") + 1] == "kubernetes"


# --- The image's packages ------------------------------------------------------------------------

def pinned_versions() -> dict[str, str]:
    lines = (INFRA / "constraints.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in reqs)
    return {r.name: next(iter(r.specifier)).version for r in reqs}


def test_the_dockerfile_installs_the_package_set_pyproject_declares():
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    commands = [c.strip() for line in text.splitlines() if line.startswith("RUN ")
                for c in line[4:].split("&&") if "pip install" in c]
    # This project's own requirements at the pinned versions, then its code; nothing added by hand.
    assert len(commands) == 2, commands
    target = re.fullmatch(r"pip install -c infra/constraints\.txt \"\.(?:\[([\w,]+)\])?\"", commands[0])
    assert target, commands[0]
    assert commands[1] == "pip install --no-deps -e ."
    extras = set(target.group(1).split(",")) if target.group(1) else set()
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"]) - {"test"}
    copied = re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE)
    assert "pyproject.toml" in copied[0] and "infra/constraints.txt" in copied[1]
    assert text.index("COPY pyproject.toml") < text.index(commands[0])
    # Every pin is a package pyproject declares (for what the image installs), within its range.
    declared = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    for extra in extras:
        declared.update({Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]})
    for name, version in pinned_versions().items():
        assert name in declared, f"{name} is pinned but pyproject.toml does not declare it"
        assert declared[name].specifier.contains(version), f"{name}=={version} is outside {declared[name]}"


def test_torch_pins_are_pyprojects_and_the_stack_runs_one_ray_and_one_prefect():
    pins = pinned_versions()
    for name in ("torch", "torchvision"):  # pyproject caps them at the pair the build machines install
        upper = next(s.version for s in Requirement(next(r for r in PYPROJECT["project"]["dependencies"]
                                                         if Requirement(r).name == name)).specifier
                     if s.operator == "<=")
        assert pins[name] == upper, name
    assert resource("RayCluster")["spec"]["rayVersion"] == pins["ray"]
    prefect_images = [img for img in images().values() if img.startswith("prefecthq/prefect:")]
    assert prefect_images and {img.split(":")[1].split("-")[0] for img in prefect_images} == {pins["prefect"]}


@pytest.mark.slow  # a subprocess
@pytest.mark.skipif(not shutil.which("kubectl"), reason="needs kubectl (its built-in kustomize)")
def test_kustomize_builds_the_whole_set_and_it_validates(tmp_path):
    """`kubectl kustomize` on a copy with the example secret files: the generated ConfigMaps and
    Secrets too, and the image override reaching every ganflow container, the RayCluster's included."""
    build = tmp_path / "k8s"
    shutil.copytree(K8S, build, ignore=shutil.ignore_patterns("*.env"))
    for example in build.glob("*.env.example"):
        shutil.copy(example, build / example.stem)
    text = (build / "kustomization.yaml").read_text().replace("newName: ganflow", "newName: registry.example/ganflow")
    (build / "kustomization.yaml").write_text(text)
    out = subprocess.run(["kubectl", "kustomize", str(build)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert {d["kind"] for d in docs} >= {"Secret", "ConfigMap", "RayCluster", "Deployment"}
    assert [e for d in docs if d["kind"] != "RayCluster" for e in kubernetes_errors(d)] == []
    ganflow = [c["image"] for d in docs for c in containers(d) if "ganflow:" in c["image"]]
    assert len(ganflow) == 3 and set(ganflow) == {f"registry.example/ganflow:{VERSION}"}


def test_a_run_logs_which_variables_are_set_by_name_never_by_value(monkeypatch):
    from flows.environment import outside_systems_summary

    for var in all_vars():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-log-me")
    summary = outside_systems_summary()
    assert "AWS_SECRET_ACCESS_KEY set" in summary and "RAY_ADDRESS unset" in summary
    assert "do-not-log-me" not in summary and all(var in summary for var in all_vars())
