"""moa.experiments.stability: the study's table and plot come from the runs' own records."""

import json

from moa.config import apply_overrides
from moa.experiments.stability import main
from moa.presets import get_preset
from moa.train import train

TINY = ["train.batch_size=4", "train.seq_len=32", "train.tokens=1024", "train.eval_tokens=256",
        "train.log_every=4", "train.eval_every=4", "model.ffn=moa-glu"]


def test_stability_table_and_plot_from_run_records(tmp_path, capsys):
    for seed in (0, 1):
        cfg = apply_overrides(get_preset("debug"), [*TINY, f"seed={seed}"])
        train(cfg, tmp_path / "runs" / f"moa-glu-s{seed}", progress=False)
    (tmp_path / "runs" / "unfinished-s0").mkdir()  # no summary: skipped
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "stability.md").read_text()
    assert (tmp_path / "stability.png").stat().st_size > 0 and "unfinished" not in text
    for seed in (0, 1):
        loss = json.loads((tmp_path / "runs" / f"moa-glu-s{seed}" / "summary.json").read_text())["final_val_loss"]
        assert f"s{seed}: {loss:.4f}" in text
        gates = [json.loads(line) for line in (tmp_path / "runs" / f"moa-glu-s{seed}" / "metrics.jsonl").open()
                 if '"gates"' in line][-1]
        assert f"L1 {gates['L1.gate_entropy']:.2f}/{gates['L1.gate_max_logit']:.1f}/" in text
    assert text.strip() in capsys.readouterr().out
