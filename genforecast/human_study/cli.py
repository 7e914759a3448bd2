"""``genforecast human-study``: DesIGN's human evaluation as a self-hosted rating study.

    genforecast human-study create study.yaml --out outputs/human_study/mine   # generate, score, write the folder
    genforecast human-study serve outputs/human_study/mine                     # the rating site (prints its links)
    genforecast human-study status outputs/human_study/mine                    # progress per variant
    genforecast human-study export outputs/human_study/mine --out answers.csv  # every raw answer (csv or json)
    genforecast human-study report outputs/human_study/mine                    # tables, pictures, W&B
    genforecast human-study simulate outputs/human_study/mine --raters 60      # known-preference raters
    genforecast human-study demo                                               # the study of `make human-study`

The study file format is described in genforecast/human_study/config.py and docs/human_study.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from genforecast.human_study.storage import DATABASE_NAME, SchemaError, StudyInUse


def _create(args: argparse.Namespace) -> int:
    from genforecast.human_study.config import load_study_config
    from genforecast.human_study.create import create_study

    config = load_study_config(args.study_file)
    out = create_study(config, args.out, force=args.force, trust_checkpoints=args.trust_checkpoints)
    print(f"study written to {out}; serve it with: genforecast human-study serve {out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from genforecast.human_study.serve import serve

    serve(args.study_dir, host=args.host, port=args.port)
    return 0


def _status(args: argparse.Namespace) -> int:
    from genforecast.human_study.config import load_study_config
    from genforecast.human_study.create import CONFIG_NAME
    from genforecast.human_study.storage import counts, open_database, progress

    target = load_study_config(Path(args.study_dir) / CONFIG_NAME).ratings_per_item
    connection = open_database(Path(args.study_dir) / DATABASE_NAME)
    try:
        totals, groups = counts(connection), progress(connection, target)
    finally:
        connection.close()
    print(f"{totals['raters']} raters, {totals['assignments']} tasks handed out, {totals['answers']} answers; "
          f"target {target} ratings per image")
    print(f"{'group':<16}{'images':>8}{'ratings':>9}{'at target':>11}{'pair votes':>12}")
    for group in groups:
        print(f"{group['variant']:<16}{group['items']:>8}{group['ratings']:>9}{group['items_at_target']:>11}"
              f"{group['pair_answers']:>12}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from genforecast.human_study.export import export_answers

    out = args.out or str(Path(args.study_dir) / f"answers.{args.format}")
    count = export_answers(Path(args.study_dir) / DATABASE_NAME, out, args.format)
    print(f"{count} answers written to {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from genforecast.human_study.report import write_report

    out = Path(args.out) if args.out else Path(args.study_dir) / "report"
    report = write_report(args.study_dir, out, replicates=args.bootstrap, seed=args.seed, min_votes=args.min_votes,
                          wandb_group=None if args.no_wandb else args.wandb_group)
    print((out / "report.md").read_text())
    print(f"report written to {out}/report.md ({report.ratings} ratings, {report.pair_votes} pairwise votes)")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from genforecast.human_study.simulate import simulate

    written = simulate(args.study_dir, args.raters, seed=args.seed)
    print(f"{args.raters} simulated raters wrote {written} answers to {Path(args.study_dir) / DATABASE_NAME}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from genforecast.human_study.config import load_study_config
    from genforecast.human_study.create import create_study
    from genforecast.human_study.demo import demo_study_file, missing_inputs

    missing = missing_inputs(args.outputs)
    if args.check:
        if missing:
            print(f"demo human study: missing {', '.join(missing)} under {args.outputs}/fashion "
                  "(`genforecast study fashion` trains them)")
            return 1
        return 0
    if (Path(args.out) / DATABASE_NAME).is_file():
        print(f"reusing the demo study in {args.out}")
        return 0
    study_file = demo_study_file(args.outputs, args.demo_root, args.out)
    create_study(load_study_config(study_file), args.out)
    print(f"demo study written to {args.out} (study file {study_file})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genforecast human-study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    create = commands.add_parser("create", help="generate the designs and controls and write the study folder")
    create.add_argument("study_file", help="study file (YAML)")
    create.add_argument("--out", required=True, help="study folder to write")
    create.add_argument("--force", action="store_true", help="replace a study folder that has no answers yet")
    create.add_argument("--trust-checkpoints", action="store_true",
                        help="unpickle checkpoints fully (default: tensors and plain values only)")
    create.set_defaults(run=_create)

    serve = commands.add_parser("serve", help="serve the rating site (prints the raters' and admin links)")
    serve.add_argument("study_dir")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: the local network)")
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    serve.set_defaults(run=_serve)

    status = commands.add_parser("status", help="progress per variant")
    status.add_argument("study_dir")
    status.set_defaults(run=_status)

    export = commands.add_parser("export", help="every raw answer as CSV or JSON")
    export.add_argument("study_dir")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--out", help="output file (default <study>/answers.<format>)")
    export.set_defaults(run=_export)

    report = commands.add_parser("report", help="tables, pictures and W&B logging of the answers")
    report.add_argument("study_dir")
    report.add_argument("--out", help="report folder (default <study>/report)")
    report.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of every interval")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    report.add_argument("--min-votes", type=int, default=20, help="pairwise votes a variant needs to be ranked")
    report.add_argument("--wandb-group", default="fashion", help="W&B group (the paper's family)")
    report.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    report.set_defaults(run=_report)

    simulate = commands.add_parser("simulate", help="simulated raters with known preferences answer the study")
    simulate.add_argument("study_dir")
    simulate.add_argument("--raters", type=int, default=60)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.set_defaults(run=_simulate)

    demo = commands.add_parser("demo", help="create the demo study from the fashion demo study's checkpoints")
    demo.add_argument("--outputs", default="outputs", help="the suite's outputs folder")
    demo.add_argument("--demo-root", default="data/demo", help="where the procedural demo data lives")
    demo.add_argument("--out", default="outputs/human_study/demo", help="demo study folder")
    demo.add_argument("--check", action="store_true", help="only check that the checkpoints exist (exit 1 if not)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``genforecast human-study``; errors a user can fix are one line on stderr, exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, FileExistsError, ValueError, SchemaError, StudyInUse) as error:
        print(f"genforecast human-study {args.command}: {error}", file=sys.stderr)
        return 2
