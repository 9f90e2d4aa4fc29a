"""`make ui-screenshot`: what an operator sees in the Prefect UI after a run, as PNG files.

Starts a Prefect server on loopback (its database in a temporary folder), runs the smoke
pipeline against it with `ganflow run`, then has headless Chromium (Debian's `chromium`
package) photograph the flow run's page: the task graph with its artifacts, and the run's logs,
ganflow's own lines among them. Standard library only.

    python -m infra.ui_screenshot [--out docs] [--config configs/smoke.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from infra.prefect_server import PrefectServer

ROOT = Path(__file__).resolve().parent.parent


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("ui-screenshot: no Chromium found: `apt-get install chromium` (Debian) and try again")


def latest_flow_run(api: str) -> dict:
    req = urllib.request.Request(f"{api}/flow_runs/filter", data=json.dumps(
        {"sort": "START_TIME_DESC", "limit": 1}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        runs = json.load(resp)
    if not runs:
        sys.exit("ui-screenshot: the run left no flow run on the server")
    return runs[0]


def shoot(url: str, out: Path, size: str = "1600,1000", wait_ms: int = 20000) -> Path:
    with tempfile.TemporaryDirectory(prefix="ganflow-chromium-") as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size}", f"--virtual-time-budget={wait_ms}",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=180)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs"))
    p.add_argument("--config", default=str(ROOT / "configs" / "smoke.yaml"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ganflow-ui-") as work:
        with PrefectServer(prefect_home=Path(work) / "prefect", log_path=Path(work) / "server.log") as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env.update(PREFECT_API_URL=server.api_url, PYTHONPATH=str(ROOT))
            subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", args.config], cwd=work, env=env,
                           check=True)
            run = latest_flow_run(server.api_url)
            time.sleep(3)  # let the last logs and artifacts land
            page = f"{server.url}/runs/flow-run/{run['id']}"
            shots = [shoot(page, out / "prefect-flow-run.png")]
    for shot in shots:
        print(shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
