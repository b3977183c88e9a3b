"""scripts/transverse_ablation.py: Gamma x 0 gives the classical twin; everything else is kept."""

import sys
from pathlib import Path

import pytest
import torch

from qidbm.checkpoint import load_checkpoint
from qidbm.cli import main as qidbm_main
from tests.test_cli import tiny_run  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import transverse_ablation  # noqa: E402


def test_scale_zero_is_the_classical_twin(tiny_run, tmp_path):  # noqa: F811
    cfg, out = tiny_run
    qidbm_main(["fit", "--config", str(cfg), "--trainer.max_epochs", "1"])
    src = out / "checkpoints" / "last.ckpt"
    dst = tmp_path / "gamma0.ckpt"
    assert transverse_ablation.main([str(src), "--scale", "0", "--out", str(dst)]) == 0
    m, info = load_checkpoint(dst)
    m0, info0 = load_checkpoint(src)
    assert m.transverse_parameter(1).abs().max() == 0 and m0.transverse_parameter(1).abs().min() > 0
    assert info["data_info"] == info0["data_info"]
    for (k, a), (_, b) in zip(m.named_parameters(), m0.named_parameters()):
        if "transverse" not in k:
            assert torch.equal(a, b), k
    # Gamma = 0: the quantum layer's draw probability is the classical sigmoid (the twin's conditional)
    v = torch.bernoulli(torch.full((5, 784), 0.3))
    st = [v, torch.zeros(5, 16), torch.bernoulli(torch.full((5, 8), 0.5))]
    torch.testing.assert_close(m.conditional(1, st)[0], torch.sigmoid(m.preactivation(1, st)), atol=1e-6, rtol=0)
    with pytest.raises(SystemExit):
        transverse_ablation.main([str(src), "--scale", "0", "--out", str(src)])


def test_a_classical_checkpoint_is_refused():
    with pytest.raises(ValueError, match="no transverse fields"):
        transverse_ablation.scale_transverse({"state_dict": {"model.weights.0": torch.ones(2, 2)}}, 0.0)
