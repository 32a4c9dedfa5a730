"""Run a compare-study YAML (``studies/transfer_vs_scratch.yaml``) variant x seed with ``train()`` and
print the table of its metric (mean, std over seeds). A stand-in until the study layer's compare
runner exists; the YAML is in that runner's schema.

    python benchmarks/transfer_vs_scratch.py studies/transfer_vs_scratch.yaml --out results.jsonl
    python benchmarks/transfer_vs_scratch.py studies/transfer_vs_scratch.yaml --out results.jsonl --table

Rows already in ``--out`` are skipped, so an interrupted measurement resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from dlsuite import yamlio
from dlsuite.config import apply_overrides, build_config


def table(rows: list[dict], variants: list[str], metric: str) -> str:
    """Markdown table: variant, n seeds, mean and std of ``metric``, mean fit time."""
    lines = [f"| variant | seeds | {metric} mean | std | min | max | fit s (mean) |", "|---|---|---|---|---|---|---|"]
    for v in variants:
        vals = [r["metrics"][metric] for r in rows if r["variant"] == v]
        if not vals:
            continue
        fit = statistics.mean(r["metrics"].get("fit_time_s", 0.0) for r in rows if r["variant"] == v)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        lines.append(
            f"| {v} | {len(vals)} | {statistics.mean(vals):.3f} | {sd:.3f} | {min(vals):.3f} | {max(vals):.3f} "
            f"| {fit:.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Run (or tabulate) the study."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("study")
    ap.add_argument("--out", default="transfer_vs_scratch.jsonl")
    ap.add_argument("--table", action="store_true", help="only print the table of the rows in --out")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="*", help="only these seeds (default: the study's)")
    ap.add_argument("--variants", nargs="*", help="only these variants, in this order (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = yamlio.load(args.study)
    variants = list(spec["variants"])
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    if not args.table:
        from dlsuite.runner.run import train

        done = {(r["variant"], r["seed"]) for r in rows}
        for seed in args.seeds if args.seeds is not None else spec["seeds"]:
            for v in args.variants or variants:
                if (v, seed) in done:
                    continue
                sets = [*spec.get("overrides", []), *spec["variants"][v], f"seed={seed}", f"tracking.run_name={v}"]
                cfg = build_config(apply_overrides(spec["base"], sets), f"{args.study}:{v}")
                t0 = time.time()
                res = train(cfg, tags={"dlsuite.study": spec["name"], "dlsuite.variant": v})
                row = {"variant": v, "seed": seed, "run_id": res.run_id, "wall_s": time.time() - t0}
                row["metrics"] = res.metrics
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                rows.append(row)
                print(
                    f"{v} seed {seed}: {spec['metric']}={res.metrics.get(spec['metric'], float('nan')):.3f}", flush=True
                )
    print(table(rows, variants, spec["metric"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
