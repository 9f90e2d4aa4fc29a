"""The design's import rules: gan_model stays pure PyTorch, and `import gan_model` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"prefect", "ray", "mlflow", "boto3", "botocore"}


def test_gan_model_sources_import_no_orchestration_or_cloud_library():
    offenders = []
    for path in (ROOT / "gan_model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_every_gan_model_module_loads_none_of_them():
    modules = [f"gan_model.{p.stem}" for p in (ROOT / "gan_model").glob("*.py") if p.stem != "__init__"]
    code = (f"import sys; import {', '.join(modules)}; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_tasks_and_gan_model_never_import_flows():
    for pkg in ("tasks", "gan_model"):
        for path in (ROOT / pkg).rglob("*.py"):
            assert "from flows" not in path.read_text() and "import flows" not in path.read_text(), path
