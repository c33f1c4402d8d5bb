#!/usr/bin/env python
"""Summarise pretrain runs (one output root per seed): kNN balanced accuracy at random init vs after training.

Run the seeds first (each root holds the recipe's ingest and curate outputs), e.g. for s in 0 1 2:
    PIPELINE_OUTPUT_ROOT=out/seed$s python run.py stage=pretrain seed=$s
then: python benchmarks/pretrain_elpv_knn.py out/seed0 out/seed1 out/seed2 --note "load average 6-8 (uptime)"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.manifest import read_manifest


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("roots", nargs="+")
    p.add_argument("--recipe", default="elpv_demo")
    p.add_argument("--start-label", default="random init", help="what the step-0 weights are")
    p.add_argument("--note", default="", help="how the runs were made (load average, machine); printed under the table")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain_elpv_knn"))
    a = p.parse_args()
    runs = []
    for r in a.roots:
        m = read_manifest(Path(r) / a.recipe / "pretrain")
        cfg = json.loads((Path(r) / a.recipe / "pretrain" / "export" / "config.json").read_text())
        run = {"root": r, "seed": cfg.get("seed"), "steps": m.counts["steps"], **m.metrics}
        # A resumed run's manifest has no step-0 kNN; its metrics.jsonl kept the first attempt's.
        for line in (Path(r) / a.recipe / "pretrain" / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("step") == 0:
                for k, v in rec.items():
                    if k.startswith("knn/"):
                        run.setdefault("knn_start." + k[4:], v)
        runs.append(run)
    tasks = sorted({k.split(".", 1)[1] for run in runs for k in run if k.startswith("knn.")})
    deltas = {}
    lines = [f"# kNN balanced accuracy on ELPV eval (test split vs train split bank), {a.start_label} vs pretrained", "",
             f"| task | {a.start_label} (mean ± sd) | pretrained (mean ± sd) | per seed (start -> trained) |", "|---|---|---|---|"]
    summary = {}
    for t in tasks:
        init = [r[f"knn_start.{t}"] for r in runs]
        done = [r[f"knn.{t}"] for r in runs]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        summary[t] = {"init_mean": statistics.mean(init), "init_sd": sd(init), "trained_mean": statistics.mean(done), "trained_sd": sd(done)}
        per = ", ".join(f"s{r['seed']}: {a_:.3f} -> {b:.3f}" for r, a_, b in zip(runs, init, done))
        lines.append(f"| {t} | {statistics.mean(init):.3f} ± {sd(init):.3f} "
                     f"| {statistics.mean(done):.3f} ± {sd(done):.3f} | {per} |")
    ips = [r["images_per_s"] for r in runs if "images_per_s" in r]
    wait = [r["loader_wait_frac"] for r in runs if "loader_wait_frac" in r]
    lines += ["", f"Runs: {len(runs)} seeds, {runs[0]['steps']} steps each; "
              f"throughput {statistics.mean(ips):.1f} images/s per run "
              f"(see the note below for the load), loader wait {100 * statistics.mean(wait):.1f} % of step time.", ""]
    for t in tasks:
        d = [r[f"knn.{t}"] - r[f"knn_start.{t}"] for r in runs]
        summary[t]["paired_delta_mean"] = statistics.mean(d)
        summary[t]["paired_delta_sd"] = statistics.stdev(d) if len(d) > 1 else 0.0
        per = ", ".join(f"s{r['seed']}: {x:+.3f}" for r, x in zip(runs, d))
        deltas[t] = (f"Paired delta (trained - {a.start_label}), {t}: {per}; "
                     f"mean {statistics.mean(d):+.3f} ± {summary[t]['paired_delta_sd']:.3f}.")
    lines = lines[: 4 + len(tasks)] + [""] + [deltas[t] + "  " for t in tasks] + lines[4 + len(tasks) :]
    if a.note:
        lines += [a.note, ""]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
