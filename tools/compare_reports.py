"""Win rates of checkpoints against a baseline, from the evaluation reports `python -m vggrpo_jax.evaluate` wrote.

    python tools/compare_reports.py --out DIR base=runs/base/eval_000000/report.json \
        vggrpo=runs/wan21/eval_000400/report.json [more NAME=report.json ...]

The first NAME is the baseline. Samples are paired by (prompt, row of the fixed eval noise), so the reports must
come from the same eval prompts, eval seed and eval.num_prompts. Writes DIR/report.{md,json}: per-split means ± s.e.
for every checkpoint and each one's win rates against the baseline with 95% bootstrap intervals.
"""

from __future__ import annotations

import argparse
import sys

from vggrpo_jax import cli
from vggrpo_jax.errors import InputError, read_json
from vggrpo_jax.evaluation import write_report


def load_records(path: str) -> list[dict]:
    """The per-sample records of a single-checkpoint report.json."""
    report = read_json(path)
    if not isinstance(report, dict) or "records" not in report or len(report["records"]) != 1:
        raise InputError(f"{path}: expected a report.json of one checkpoint (with 'records'), got keys "
                         f"{sorted(report.get('records', report))}")
    records = next(iter(report["records"].values()))
    seeds = {r.get("noise_seed") for r in records}
    if len(seeds) > 1:
        raise InputError(f"{path}: records drawn with several eval noise seeds {sorted(seeds)}")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory for report.md / report.json")
    parser.add_argument("reports", nargs="+", help="NAME=path/to/report.json; the first is the baseline")
    args = parser.parse_args(argv)
    checkpoints = {}
    for item in args.reports:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"expected NAME=path/to/report.json, got {item!r}")
        if name in checkpoints:
            parser.error(f"checkpoint name {name!r} given twice")
        checkpoints[name] = load_records(path)
    if len(checkpoints) < 2:
        parser.error("give a baseline and at least one other report")
    seeds = {next(iter({r.get("noise_seed") for r in rs})) for rs in checkpoints.values()}
    if len(seeds) > 1:
        parser.error(f"the reports used different eval noise seeds {sorted(map(str, seeds))}: samples do not pair")
    baseline = next(iter(checkpoints))
    write_report(args.out, checkpoints, baseline=baseline)
    print(open(f"{args.out}/report.md").read())
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
