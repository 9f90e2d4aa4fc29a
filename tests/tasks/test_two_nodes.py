"""Two Ray nodes on this machine (a head and a second node, separate raylet processes, one CPU
each) with the data set and the checkpoints on the local S3 server: nothing relies on a shared
local disk. Slow."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, digits, upload_images

pytestmark = pytest.mark.slow


@pytest.fixture()
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # Ray waits 30 s per node by default; a busy CI machine may need longer.
    cluster = Cluster()
    cluster.add_node(wait=False, num_cpus=1, include_dashboard=False)
    cluster.add_node(wait=False, num_cpus=1)
    ray.init(address=cluster.address, configure_logging=False)
    cluster.wait_for_nodes(timeout=180)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_training_across_two_nodes_with_data_and_checkpoints_in_s3(two_node_cluster, s3, s3_server, bucket,
                                                                   tmp_path):
    import ray

    from gan_model.checkpoint import load_checkpoint
    from gan_model.config import build_config
    from tasks.ingest import ingest_dataset
    from tasks.train import local_checkpoint, train_gan

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    upload_images(s3, bucket, "src/", digits(128, size=16))
    cfg = build_config({}, [
        f"data.source=s3://{bucket}/src/", f"data.endpoint_url={s3_server.url}", "data.resolution=16",
        f"data.processed_uri=s3://{bucket}/datasets", f"data.cache_dir={tmp_path / 'cache'}",
        f"train.storage_path=s3://{bucket}/ray", "model.z_dim=8", "model.g_width=4", "model.d_width=4",
        "train.num_workers=2", "train.batch_size=8", "train.steps=10", "train.checkpoint_every=5",
        "train.log_every=5", "train.resources_per_worker={CPU: 1}"])  # one worker per node
    dataset = ingest_dataset(cfg.data)
    assert dataset.uri.startswith(f"s3://{bucket}/datasets/")

    result = train_gan(cfg, dataset)
    assert result.checkpoint_uri.startswith(f"s3://{bucket}/ray/{result.run_name}/checkpoint_")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="ray/")["Contents"]]
    assert any(k.endswith("/checkpoint.pt") for k in keys)
    state = load_checkpoint(local_checkpoint(result.checkpoint_uri, cfg.data))
    assert state["step"] == 10 and [m["step"] for m in state["history"]] == [5, 10]

    # A second run with the same inputs finds the run in S3 and trains no further.
    again = train_gan(cfg, dataset)
    assert again.checkpoint_uri == result.checkpoint_uri

    # A cluster started on this machine the way `ray start` does (it records its address in
    # /tmp/ray/ray_current_cluster) is not joined by a run without RAY_ADDRESS: that run starts
    # its own local instance, as documented (joining made ray.init fail on num_cpus).
    probe = ("from tasks.ray_runtime import ensure_ray, shutdown_ray\n"
             "ensure_ray(1)\nimport ray\nprint(ray.get_runtime_context().gcs_address)\nshutdown_ray()")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         env={**env, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    own = out.stdout.strip().splitlines()[-1]
    assert own.startswith("127.0.0.1:") and own != two_node_cluster.address
