"""``nascore predictor fit | eval | predict | adapt | transfer``: performance predictors."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .options import Commands

# The library is imported inside the handlers: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    pr = commands.add_parser("predictor", help="performance predictors: fit on performance datasets, evaluate, "
                                               "predict")
    actions = pr.add_subparsers(dest="predictor_command", required=True)
    f = actions.add_parser("fit", help="fit a predictor per task on performance datasets (and every baseline on the "
                                       "same archs)")
    f.add_argument("data", nargs="+", help="performance dataset folders (nascore bench collect)")
    f.add_argument("--out", required=True, help="predictor file to write")
    f.add_argument("--predictor", default="aio-p", help="predictor name (nascore plugins lists them)")
    f.add_argument("--holdout", type=float, default=0.0, metavar="FRACTION",
                   help="leave this fraction of each task's archs out of fitting (eval scores them)")
    f.add_argument("--seed", type=int, default=0, help="seed of the hold-out split and the fitting")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="predictor option, e.g. --set epochs=500")
    f.set_defaults(handler=_fit)

    ev = actions.add_parser("eval", help="Spearman, Kendall tau and MAE per task on archs not used in fitting, "
                                         "against the baselines; a scatter plot")
    ev.add_argument("predictor_file")
    ev.add_argument("data", nargs="+", help="performance dataset folders")
    ev.add_argument("--plot", help="scatter plot file (default: beside the predictor file, <name>.eval.png)")
    ev.set_defaults(handler=_evaluate)

    pp = actions.add_parser("predict", help="predicted label of an arch on a task")
    pp.add_argument("predictor_file")
    pp.add_argument("arch", help="arch.json file or named arch")
    pp.add_argument("--task", help="task (default: the file's only task)")
    pp.set_defaults(handler=_predict)

    ad = actions.add_parser("adapt", help="add one K-Adapter (AIO-P) to an aio-p predictor, trained on the labelled "
                                          "archs of another task or space, the base frozen")
    ad.add_argument("predictor_file", help="aio-p or aio-p-adapters predictor file")
    ad.add_argument("data", nargs="+", help="performance dataset folders of the source")
    ad.add_argument("--out", required=True, help="aio-p-adapters predictor file to write")
    ad.add_argument("--task", help="the source task (default: the datasets' only task)")
    ad.add_argument("--base-task", help="the file's task to adapt (default: its only task)")
    ad.add_argument("--seed", type=int, default=0, help="seed of the adapter's training")
    ad.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="option of aio-p-adapters, e.g. --set adapter_epochs=100")
    ad.set_defaults(handler=_adapt)

    tr = actions.add_parser("transfer", help="fine-tune an aio-p(-adapters) predictor on a few labelled archs of a "
                                             "target task or space (and fit every baseline on the same archs)")
    tr.add_argument("predictor_file", help="aio-p or aio-p-adapters predictor file")
    tr.add_argument("data", nargs="+", help="performance dataset folders of the target")
    tr.add_argument("--out", required=True, help="aio-p-adapters predictor file to write")
    tr.add_argument("--labels", type=int, default=20, metavar="N",
                    help="labelled target archs to fine-tune on, a seeded draw (default 20); eval scores the rest")
    tr.add_argument("--task", help="the target task (default: the datasets' only task)")
    tr.add_argument("--base-task", help="the file's task to start from (default: its only task)")
    tr.add_argument("--train", default="heads+base", metavar="MODE",
                    help="what learns: heads+base (default, AIO-P's: adapters frozen), heads, heads+adapters")
    tr.add_argument("--seed", type=int, default=0, help="seed of the draw and the fine-tuning")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="option of aio-p-adapters, e.g. --set fine_tune_epochs=100")
    tr.set_defaults(handler=_transfer)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fit(args: argparse.Namespace) -> int:
    from nascore.performance.perfdata import PerfDataset
    from nascore.performance.predictors.fitting import fit_file
    from nascore.progress import Reporter
    from nascore.spec import apply_overrides

    datasets = [PerfDataset.read(d) for d in args.data]
    reporter = Reporter()
    start = time.perf_counter()
    file = fit_file(datasets, args.predictor, apply_overrides({}, args.overrides), args.holdout, args.seed,
                    progress=reporter.progress)
    file.save(args.out)
    for task, t in file.tasks.items():
        print(f"{task}: {args.predictor} and {len(t.baselines)} baselines fitted on {len(t.fitted)} archs "
              f"(label {t.label})")
    print(f"written: {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from nascore.performance.perfdata import PerfDataset
    from nascore.performance.predictors.file import PredictorFile
    from nascore.performance.predictors.fitting import evaluate_file
    from nascore.performance.predictors.scoring import scatter_plot
    from nascore.progress import Reporter

    file = PredictorFile.load(args.predictor_file)
    result = evaluate_file(file, [PerfDataset.read(d) for d in args.data])
    reporter = Reporter()
    panels = []
    for task, entry in result.items():
        if not entry["held_out"]:
            print(f"{task}: every arch of the datasets was used in fitting; nothing to evaluate on")
            continue
        rows = [(name, str(s["n"]), _fmt(s["spearman"]), _fmt(s["kendall"]), _fmt(s["mae"], 4))
                for name, s in entry["scores"].items()]
        reporter.table(f"{task}: {entry['held_out']} archs not used in fitting ({entry['excluded']} used in "
                       f"fitting, left out), label {entry['label']}", rows,
                       ("predictor", "archs", "Spearman", "Kendall tau", "MAE"))
        panels.append({"title": f"{task}: {file.name}", "label": entry["label"].rsplit("/", 1)[-1],
                       "predicted": entry["predicted"][file.name], "true": entry["true"],
                       "spearman": entry["scores"][file.name]["spearman"]})
    if panels:
        plot = Path(args.plot) if args.plot else Path(args.predictor_file).with_suffix(".eval.png")
        scatter_plot(plot, panels)
        print(f"scatter plot: {plot}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nascore.performance.predictors.file import PredictorFile
    from nascore.performance.predictors.predict import predict_arch

    file = PredictorFile.load(args.predictor_file)
    p = predict_arch(file, args.arch, args.task)
    print(f"{p.name} on {p.task}: predicted {p.label} = {p.value:.4f} ({file.name}; "
          f"{p.macs / 1e6:.2f} M multiply-adds at {file.input_size}x{file.input_size})")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from nascore.performance.perfdata import PerfDataset
    from nascore.performance.predictors.adapters import adapt_file, summary
    from nascore.performance.predictors.file import PredictorFile
    from nascore.progress import Reporter
    from nascore.spec import apply_overrides

    file = PredictorFile.load(args.predictor_file)
    datasets = [PerfDataset.read(d) for d in args.data]
    start = time.perf_counter()
    out = adapt_file(file, f"predictor file {args.predictor_file}", datasets, args.task, args.base_task,
                     apply_overrides({}, args.overrides), args.seed, Reporter().progress)
    out.save(args.out)
    for task, t in out.tasks.items():
        print(f"{task}: aio-p-adapters, {summary(t.predictor)}")
    print(f"written: {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from nascore.performance.perfdata import PerfDataset
    from nascore.performance.predictors.adapters import summary, transfer_file
    from nascore.performance.predictors.file import PredictorFile
    from nascore.progress import Reporter
    from nascore.spec import apply_overrides

    file = PredictorFile.load(args.predictor_file)
    datasets = [PerfDataset.read(d) for d in args.data]
    start = time.perf_counter()
    out = transfer_file(file, f"predictor file {args.predictor_file}", datasets, args.labels, args.task,
                        args.base_task, args.train, apply_overrides({}, args.overrides), args.seed,
                        progress=Reporter().progress)
    out.save(args.out)
    for task, t in out.tasks.items():
        print(f"{task}: aio-p-adapters ({summary(t.predictor)}) fine-tuned ({args.train}) and {len(t.baselines)} "
              f"baselines fitted on {len(t.fitted)} drawn archs (label {t.label}, seed {args.seed})")
    print(f"written: {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0
