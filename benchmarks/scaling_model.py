"""A MODEL, NOT A MEASUREMENT: the training throughput the 64x64 DCGANs should reach on 1, 8 and
64 GPUs, computed from what can be counted exactly here and a few stated assumptions.

Counted from the real networks (gan_model.networks): parameters of G and D, hence the bytes of the
two gradient all-reduces per step (D's, G's; README "Scaling and recovery"), and the multiply-adds
of one forward pass, hence the FLOPs of a training step per image. Measured: the CPU step rate in
RESULTS.md, only as a check that the FLOP count is the right size. Assumed (ASSUMPTIONS, no GPU was
lent to this project): a GPU's sustained convolution rate and fixed per-step cost, and the
interconnects' bandwidths. Time per step = compute + fixed cost + all-reduce (no overlap, the
pessimistic end) or max(compute, all-reduce) + fixed cost (DDP overlapping it completely, the
optimistic end). Re-run it (`python -m benchmarks.run scaling_model`) after a network change.
"""

from __future__ import annotations

import math

# What no GPU on this project has measured yet: replace with measurements when one is lent.
ASSUMPTIONS = {
    "gpu_tflops": 60.0,        # sustained TF32 convolution rate of one H100 on these small convs (~12% of peak)
    "step_overhead_ms": 3.0,   # per step: ~150 kernel launches, two Adam updates, EMA, Python
    "nvlink_gbs": 350.0,       # NCCL bus bandwidth inside an 8-GPU NVLink node, GB/s
    "latency_us": 10.0,        # per all-reduce stage (NCCL tree: 2 log2 N stages)
    "bytes_per_param": 4,      # fp32 gradients
}
# Inter-node networks per node, effective GB/s (80% of line rate).
NETWORKS = {"8x400 Gb/s InfiniBand": 8 * 400 / 8 * 0.8, "100 Gb/s Ethernet": 100 / 8 * 0.8}
MODELS = {"DCGAN 64x64 width 64 (PyTorch example)": 64, "DCGAN 64x64 width 32 (ganflow default widths)": 32}
CPU_MEASURED = {"img_s": 74, "what": "64x64 width 64 batch 64 on 2 CPU cores, RESULTS.md's training-step throughput"}
# (GPUs, GPUs per node, inter-node network, per-worker batch)
LAYOUTS = [(1, 1, None, 64), (8, 8, None, 64), (64, 8, "8x400 Gb/s InfiniBand", 64),
           (64, 8, "100 Gb/s Ethernet", 64), (64, 8, "100 Gb/s Ethernet", 256), (64, 8, "100 Gb/s Ethernet", 16)]


def count(width: int, channels: int = 3, z_dim: int = 100) -> dict:
    """Parameters of G and D, and multiply-adds of one forward pass per image, by running them once."""
    import torch
    from torch import nn

    from gan_model.networks import Discriminator, Generator

    g, d = Generator(z_dim, width, channels, 64), Discriminator(width, channels, 64, "batch")
    macs = [0]

    def hook(m, inputs, out):
        if isinstance(m, nn.ConvTranspose2d):  # every input element meets cout x k x k weights
            macs[0] += inputs[0].numel() * m.weight[0].numel()
        else:
            macs[0] += out.numel() * m.weight[0].numel()

    result = {}
    for name, net, x in (("g", g, torch.randn(1, z_dim)), ("d", d, torch.randn(1, channels, 64, 64))):
        hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        macs[0] = 0
        with torch.no_grad():
            net.eval()(x)
        for h in hooks:
            h.remove()
        result[f"{name}_params"] = sum(p.numel() for p in net.parameters())
        result[f"{name}_macs"] = macs[0]
    # One step of gan_model.training, in forward passes per image (a backward pass costs two: input
    # and weight gradients): G runs once and its output serves both steps (G 1 + backward 2); D runs
    # on the real and the fake batch with backward (2 x 3), then on the fake batch for G's loss with
    # its weights frozen, so that backward computes input gradients only (1 + 1).
    result["train_flops"] = 2 * (3 * result["g_macs"] + 8 * result["d_macs"])
    return result


def allreduce_ms(n_bytes: float, gpus: int, per_node: int, network: str | None, a: dict) -> float:
    """Two-level ring all-reduce (NCCL): inside the node over NVLink, then between nodes over the
    network, each tier moving 2(k-1)/k of the message; plus a latency per tree stage."""
    nodes = gpus // per_node
    t = 2 * (per_node - 1) / per_node * n_bytes / (a["nvlink_gbs"] * 1e9) if per_node > 1 else 0.0
    if nodes > 1:
        t += 2 * (nodes - 1) / nodes * n_bytes / (NETWORKS[network] * 1e9)
    t += 2 * math.ceil(math.log2(gpus)) * a["latency_us"] * 1e-6 if gpus > 1 else 0.0
    return 1e3 * t


def run() -> list[dict]:
    a, rows = ASSUMPTIONS, []
    for model, width in MODELS.items():
        c = count(width)
        step_bytes = (c["g_params"] + c["d_params"]) * a["bytes_per_param"]  # G's all-reduce + D's
        for gpus, per_node, network, batch in LAYOUTS:
            compute = 1e3 * batch * c["train_flops"] / (a["gpu_tflops"] * 1e12)
            comm = allreduce_ms(c["g_params"] * a["bytes_per_param"], gpus, per_node, network, a) \
                + allreduce_ms(c["d_params"] * a["bytes_per_param"], gpus, per_node, network, a)
            slow, fast = compute + a["step_overhead_ms"] + comm, max(compute, comm) + a["step_overhead_ms"]
            alone = batch / (compute + a["step_overhead_ms"])  # one GPU at this per-worker batch, img/ms
            rows.append({"model": model, "gpus": gpus, "layout": network or ("1 node, NVLink" if gpus > 1 else "-"),
                         "batch": batch, "params_m": (c["g_params"] + c["d_params"]) / 1e6,
                         "mb_per_step": step_bytes / 1e6, "gflop_per_img": c["train_flops"] / 1e9,
                         "compute_ms": compute, "comm_ms": comm,
                         "img_s_low": 1e3 * gpus * batch / slow, "img_s_high": 1e3 * gpus * batch / fast,
                         "efficiency": gpus * batch / slow / (gpus * alone)})
    return rows


def to_markdown(rows: list[dict]) -> list[str]:
    a, first = ASSUMPTIONS, rows[0]
    cpu_gflops = CPU_MEASURED["img_s"] * first["gflop_per_img"]
    lines = [
        "**This is a MODEL, not a measurement** (`benchmarks/scaling_model.py`): no GPU was lent to this project.",
        "",
        "Counted from `gan_model.networks` (RGB, z_dim 100): "
        + "; ".join(f"{m}: {r['params_m']:.2f} M parameters, {r['mb_per_step']:.1f} MB of fp32 gradients "
                    f"all-reduced per step (G's and D's), {r['gflop_per_img']:.2f} GFLOP per image per step"
                    for m, r in {r['model']: r for r in rows}.items()) + ".",
        f"Check of the FLOP count against a measurement: {CPU_MEASURED['img_s']} img/s on the CPU "
        f"({CPU_MEASURED['what']}) means {cpu_gflops:.0f} GFLOP/s sustained, about the fp32 peak of two AVX-512 "
        "cores, so the count is not too high (that measurement is of grey images: 2% fewer FLOPs).",
        f"Assumed: one H100 sustains {a['gpu_tflops']:.0f} TFLOP/s on these convolutions (TF32) with "
        f"{a['step_overhead_ms']:.0f} ms of fixed cost per step; NVLink inside a node {a['nvlink_gbs']:.0f} GB/s "
        "(NCCL bus bandwidth); between nodes "
        + ", ".join(f"{n} {v:.0f} GB/s per node" for n, v in NETWORKS.items())
        + f" (80% of line rate); {a['latency_us']:.0f} us per all-reduce stage; 8 GPUs per node. "
        "Low = all-reduce after compute (no overlap); high = fully overlapped with the backward pass.",
        "",
        "| model | GPUs | between nodes | per-worker batch | compute ms/step | all-reduce ms/step | images/s (low - high) | efficiency (low) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['gpus']} | {r['layout']} | {r['batch']} | {r['compute_ms']:.2f} | {r['comm_ms']:.2f} "
              f"| {r['img_s_low']:,.0f} - {r['img_s_high']:,.0f} | {r['efficiency']:.0%} |" for r in rows]
    pick = {(r["model"], r["gpus"], r["layout"], r["batch"]): r for r in rows}
    big = next(iter(MODELS))
    ib, eth = (pick[(big, 64, net, 64)] for net in NETWORKS)
    lines += ["", f"Reading it: inside a node and over InfiniBand the all-reduce is small next to the compute "
              f"({ib['efficiency']:.0%} at 64 GPUs); over 100 Gb/s Ethernet the width-64 model's "
              f"{eth['mb_per_step']:.0f} MB per step take {eth['comm_ms']:.1f} ms against {eth['compute_ms']:.1f} ms of "
              f"compute, so efficiency falls to {eth['efficiency']:.0%}. A larger per-worker batch buys it back "
              f"({pick[(big, 64, eth['layout'], 256)]['efficiency']:.0%} at 256) but changes the recipe (global batch "
              f"16,384, learning-rate scaling); a smaller one wastes the GPUs "
              f"({pick[(big, 64, eth['layout'], 16)]['efficiency']:.0%} at 16) and gives each worker's BatchNorm "
              "16-image statistics. Throughput is not time to a good FID: a global batch of 4,096 needs its own recipe."]
    return lines
