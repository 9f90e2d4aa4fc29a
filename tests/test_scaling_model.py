"""benchmarks/scaling_model.py: its counts are the networks' and the README's, and the MODEL in
RESULTS.md is what the script computes today (so the paper estimate cannot drift from the code)."""

import re

from benchmarks import scaling_model
from tests.helpers import ROOT


def test_counts_are_the_networks_and_match_the_readme():
    c = scaling_model.count(64)
    assert (round(c["g_params"] / 1e6, 1), round(c["d_params"] / 1e6, 1)) == (3.6, 2.8)  # README: 3.6 M + 2.8 M
    readme = " ".join((ROOT / "README.md").read_text().split())
    mb = round((c["g_params"] + c["d_params"]) * 4 / 1e6)
    assert f"about 3.6 M + 2.8 M parameters, about {mb} MB in fp32" in readme


def test_results_md_holds_the_model_the_script_computes_marked_as_a_model():
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    sections = re.split(r"\n(?=## )", text)
    model = [s for s in sections if s.startswith("## Scaling to 1, 8 and 64 GPUs: a MODEL, not a measurement")]
    assert len(model) == 1 and "**This is a MODEL, not a measurement**" in model[0]
    expected = scaling_model.to_markdown(scaling_model.run())
    assert [line for line in expected if line.startswith("|")] == \
        [line for line in model[0].splitlines() if line.startswith("|")]
