"""The design's import rules (DESIGN.md, Layers): imports point down only, gan_model stays pure
PyTorch and light to import, and no module imports another module's private name."""

import ast
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PACKAGES = ("flows", "tasks", "gan_model", "infra")
FORBIDDEN_IN_GAN_MODEL = {"prefect", "ray", "mlflow", "boto3", "botocore"}
# What each layer may import of ours (DESIGN.md's table).
MAY_IMPORT = {"flows": {"flows", "tasks", "gan_model", "infra"}, "tasks": {"tasks", "gan_model"},
              "gan_model": {"gan_model"}, "infra": {"infra"}}


def imports(package: str):
    """(file, imported module, imported names) for every import in a package, nested ones included."""
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.relative_to(ROOT), alias.name, []
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path.relative_to(ROOT), node.module, [a.name for a in node.names]


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_only(package):
    offenders = [f"{path}: {module}" for path, module, _ in imports(package)
                 if module.split(".")[0] in PACKAGES and module.split(".")[0] not in MAY_IMPORT[package]]
    assert offenders == []


def test_gan_model_sources_import_no_orchestration_or_cloud_library():
    offenders = [f"{path}: {module}" for path, module, _ in imports("gan_model")
                 if module.split(".")[0] in FORBIDDEN_IN_GAN_MODEL]
    assert offenders == []


@pytest.mark.parametrize("package", PACKAGES + ("tests", "benchmarks"))
def test_no_private_name_is_imported_across_modules(package):
    """Make a name public where it belongs, or move the caller."""
    offenders = [f"{path}: from {module} import {name}" for path, module, names in imports(package)
                 if module.split(".")[0] in PACKAGES for name in names if name.startswith("_")]
    assert offenders == []


@pytest.mark.slow
def test_importing_every_gan_model_module_loads_none_of_them():
    modules = [f"gan_model.{p.stem}" for p in (ROOT / "gan_model").glob("*.py") if p.stem != "__init__"]
    code = (f"import sys; import {', '.join(modules)}; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN_IN_GAN_MODEL)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
