"""Inception feature extraction: ganflow's `InceptionFeatures` against torch-fidelity's own
`calculate_metrics` (FID) on the same images and the same weights file, in one run.

Both run the same network; the difference is the pipeline around it (batching, data
loading, precision). Also checks the two FIDs agree.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path


def run(n: int = 96, batch: int = 32) -> list[dict]:
    import numpy as np
    import torch
    import torch_fidelity

    from gan_model.evaluation import compare, stats_of
    from gan_model.inception import InceptionFeatures, make_random_weights
    from infra.sample_data import load_sample

    x = load_sample("mnist")[: 2 * n, None]
    a, b = x[:n], x[n:]
    work = Path(tempfile.mkdtemp(prefix="ganflow-bench-fid-"))
    try:
        net = InceptionFeatures(make_random_weights(work / "random.pth"), batch_size=batch)
        net.calibrate_batchnorm([b[:batch]])
        weights = net.save_weights(work / "calibrated.pth")

        class Images(torch.utils.data.Dataset):
            def __init__(self, arr):
                self.x = torch.from_numpy(np.ascontiguousarray(arr)).expand(-1, 3, -1, -1)

            def __len__(self):
                return len(self.x)

            def __getitem__(self, i):
                return self.x[i]

        t = time.perf_counter()
        theirs = torch_fidelity.calculate_metrics(
            input1=Images(a), input2=Images(b), fid=True, feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=str(weights), cuda=torch.cuda.is_available(), cache=False,
            verbose=False, batch_size=batch)["frechet_inception_distance"]
        t_theirs = time.perf_counter() - t

        ours_net = InceptionFeatures(weights, device="cuda" if torch.cuda.is_available() else "cpu",
                                     batch_size=batch)
        t = time.perf_counter()
        sa, sb = stats_of(ours_net, [a], keep_features=n), stats_of(ours_net, [b], keep_features=n)
        ours = compare(sa, sb, kid_subsets=1, kid_subset_size=n)["fid"]
        t_ours = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [{"n": 2 * n, "ours_img_s": 2 * n / t_ours, "theirs_img_s": 2 * n / t_theirs,
             "ratio": t_theirs / t_ours, "fid_ours": ours, "fid_theirs": theirs}]


def to_markdown(rows: list[dict]) -> list[str]:
    lines = ["| images | ganflow img/s | torch-fidelity img/s | ratio | FID (ganflow) | FID (torch-fidelity) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['n']} | {r['ours_img_s']:.1f} | {r['theirs_img_s']:.1f} | {r['ratio']:.2f}x | "
              f"{r['fid_ours']:.6g} | {r['fid_theirs']:.6g} |" for r in rows]
    return lines
