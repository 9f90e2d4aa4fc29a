"""Ray Train on 2 CPU workers: DDP correctness, recovery from a hard worker crash, and
resuming a stopped run. Slow: each test starts a worker group."""

import copy
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from gan_model.errors import TrainingFailed

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def make_dataset(tmp_path, n=128, r=16):
    from tests.helpers import digits, write_dataset
    return write_dataset(tmp_path / "ds", digits(n, r))


def tiny(tmp_path, *extra):
    from tests.helpers import tiny_training
    return tiny_training("train.num_workers=2", "train.log_every=5", "train.checkpoint_every=5",
                         f"train.storage_path={tmp_path / 'ray'}", *extra)


def die_once_at(step: int, marker: Path, storage: Path):
    """A worker hook: rank 1 (rank 0 when alone) dies hard before `step`, once per marker file,
    after Ray Train's controller has registered every report before it (one each 5 steps)."""
    def before_step(s: int) -> None:
        import json

        import ray.train
        ctx = ray.train.get_context()
        if s == step and ctx.get_world_rank() == min(1, ctx.get_world_size() - 1) and not marker.exists():
            marker.touch()
            # The controller registers a reported checkpoint on its next poll, and writes down how
            # many it has in the run's checkpoint_manager_snapshot.json: a crash before that falls
            # back to the previous checkpoint. Wait for it, so the test knows where it resumes.
            def registered() -> int:
                try:
                    return max((json.loads(f.read_text()).get("current_report_index", 0)
                                for f in storage.glob("*/checkpoint_manager_snapshot.json")), default=0)
                except (OSError, ValueError):  # caught while being written
                    return 0
            deadline = time.monotonic() + 300
            while registered() < step // 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            os._exit(17)  # a hard crash: no exception, no cleanup
    return before_step


def final_checkpoint(result):
    from gan_model.checkpoint import load_checkpoint
    return load_checkpoint(result.checkpoint_uri)


def test_a_worker_that_dies_hard_is_restarted_from_the_latest_checkpoint(tmp_path):
    from tasks.train import train_gan
    cfg = tiny(tmp_path, "train.steps=20", "train.max_failures=1")
    result = train_gan(cfg, make_dataset(tmp_path), before_step=die_once_at(12, tmp_path / "died", tmp_path / "ray"))
    state = final_checkpoint(result)
    assert result.steps == 20 and state["step"] == 20
    assert state["starts"] == [0, 10]  # restarted once, from the checkpoint at step 10 (last report < 12)
    assert [m["step"] for m in state["history"]] == [5, 10, 15, 20]  # no duplicated or lost steps


def test_a_stopped_run_resumes_when_started_again(tmp_path):
    from tasks.train import train_gan
    cfg = tiny(tmp_path, "train.steps=20", "train.max_failures=0")
    dataset = make_dataset(tmp_path)
    with pytest.raises(TrainingFailed, match="training failed"):  # no restarts allowed
        train_gan(cfg, dataset, before_step=die_once_at(17, tmp_path / "died", tmp_path / "ray"))  # after the step-15 checkpoint
    result = train_gan(cfg, dataset)  # what a Prefect retry or a re-run of the flow does
    state = final_checkpoint(result)
    assert state["starts"] == [0, 15] and state["step"] == 20
    assert [m["step"] for m in state["history"]] == [5, 10, 15, 20]


def _one_step_worker(config):
    """Runs one training step on each worker and saves that worker's parameters."""
    import ray.train
    from ray.train.torch import prepare_model

    from gan_model.config import GanflowConfig
    from gan_model.shards import ShardedImages
    from gan_model.training import Hooks, RankData, train

    cfg = GanflowConfig.model_validate(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    wrapped = []

    def wrap(module, broadcast_buffers=True):
        wrapped.append(prepare_model(module, parallel_strategy_kwargs={"broadcast_buffers": broadcast_buffers}))
        return wrapped[-1]

    data = RankData(ShardedImages(config["uri"]), cfg.train.seed, rank, world, cfg.train.batch_size)
    train(cfg.model, cfg.train.recipe(), data, log_every=1, hooks=Hooks(wrap=wrap, report=lambda m, c: ray.train.report(m)))
    g, d = (w.module for w in wrapped)
    torch.save({"G": g.state_dict(), "D": d.state_dict()}, Path(config["out"]) / f"rank{rank}.pt")


@pytest.mark.parametrize("d_norm", ["batch", "spectral"])
def test_ddp_step_equals_the_single_process_average_of_per_worker_gradients(tmp_path, d_norm):
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from gan_model.losses import d_loss_fake, d_loss_real, g_loss
    from gan_model.networks import build_networks
    from gan_model.shards import ShardedImages
    from gan_model.training import RankData, step_latents

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # Augmentation off: the reference below is the plain step (128 images would turn it on).
    cfg = tiny(tmp_path, "train.steps=1", "train.log_every=1", "train.checkpoint_every=100", f"model.d_norm={d_norm}",
               "train.augment=off")
    dataset = make_dataset(tmp_path)
    TorchTrainer(_one_step_worker,
                 train_loop_config={"cfg": cfg.model_dump(mode="json"), "uri": dataset.uri, "out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(name="ddp-check", storage_path=str(tmp_path / "ray"))).fit()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(cfg.train.seed)
    g, d = build_networks(cfg.model, cfg.data.channels, cfg.data.resolution)
    # Parameters only: BatchNorm statistics and spectral-norm power-iteration vectors are
    # per-worker buffers by design.
    param_keys = {"G": [k for k, _ in g.named_parameters()], "D": [k for k, _ in d.named_parameters()]}
    for part in ("G", "D"):  # DDP keeps every worker's parameters identical
        for k in param_keys[part]:
            torch.testing.assert_close(ranks[0][part][k], ranks[1][part][k], rtol=0, atol=0)

    # The same step in one process: each worker's batch through its own copy of the
    # networks (BatchNorm statistics are per worker), gradients averaged, one Adam step.
    tc = cfg.train
    images = ShardedImages(dataset.uri)
    reals = [torch.from_numpy(RankData(images, tc.seed, r, 2, tc.batch_size).batch(0)).float() / 127.5 - 1
             for r in range(2)]
    zs = [step_latents(tc.seed, r, 0, tc.batch_size, cfg.model.z_dim) for r in range(2)]
    gs = [copy.deepcopy(g) for _ in range(2)]
    ds = [copy.deepcopy(d) for _ in range(2)]
    fakes = [gs[r](zs[r]) for r in range(2)]

    def averaged_step(model, copies, losses, lr):
        for c, loss in zip(copies, losses):
            grads = torch.autograd.grad(loss, list(c.parameters()), retain_graph=True)
            for p, gr in zip(model.parameters(), grads):
                p.grad = gr / 2 if p.grad is None else p.grad + gr / 2
        torch.optim.Adam(model.parameters(), lr=lr, betas=(tc.beta1, tc.beta2)).step()

    averaged_step(d, ds, [d_loss_real(ds[r](reals[r])) + d_loss_fake(ds[r](fakes[r].detach())) for r in range(2)],
                  tc.lr_d)
    for r in range(2):  # each worker's D now has the updated parameters and its own buffers
        with torch.no_grad():
            for p_r, p in zip(ds[r].parameters(), d.parameters()):
                p_r.copy_(p)
        ds[r].requires_grad_(False)
    averaged_step(g, gs, [g_loss(ds[r](fakes[r])) for r in range(2)], tc.lr_g)
    for part, model in (("G", g), ("D", d)):
        for k, v in model.named_parameters():
            torch.testing.assert_close(ranks[0][part][k], v.detach(), rtol=1e-4, atol=1e-6)
