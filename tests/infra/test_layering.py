"""infra/ stands alone: the stdlib, boto3 and its own modules (plus the sample data's readers),
never the pipeline's packages nor the services it starts."""

import ast
from pathlib import Path

INFRA = Path(__file__).resolve().parents[2] / "infra"
FORBIDDEN = {"flows", "tasks", "gan_model", "prefect", "mlflow", "ray", "torch"}


def test_infra_imports_none_of_the_pipeline_packages():
    offenders = []
    for path in INFRA.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
