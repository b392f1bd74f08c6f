"""``nascore bench collect`` and ``bench pseudo-label``: performance datasets, archs labelled on a spec's tasks."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import Commands, add_executor, add_overrides, executor

# The library is imported inside the handlers: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    bench = commands.add_parser("bench", help="performance datasets: archs trained on a spec's tasks, for predictors")
    bench.set_defaults(interrupted="run the same command again to resume the collection")
    actions = bench.add_subparsers(dest="bench_command", required=True)
    c = actions.add_parser("collect", help="draw archs of a spec's space (stratified over multiply-adds), train each "
                                           "on each task with the spec's train: block, record them in --out")
    c.add_argument("spec")
    c.add_argument("--archs", type=int, required=True, metavar="N", help="how many archs")
    c.add_argument("--out", required=True, help="dataset folder; an unfinished collection there is resumed")
    c.add_argument("--workers", type=int, default=1, help="processes training archs at once (default 1; "
                                                          "--executor local)")
    c.add_argument("--seed", type=int, help="seed of the draw (default: the spec's seed)")
    add_overrides(c)
    add_executor(c, "the archs")
    c.set_defaults(handler=_collect)

    pl = actions.add_parser("pseudo-label", help="AIO-P pseudo-labels of the archs bench collect draws: each arch is "
                                                 "a path of a single-path supernet fine-tuned briefly with one task "
                                                 "head shared by all (latent sampling), not trained from scratch")
    pl.add_argument("spec")
    pl.add_argument("--archs", type=int, required=True, metavar="N", help="how many archs (bench collect's plan)")
    pl.add_argument("--out", required=True, help="dataset folder; an unfinished one there is resumed")
    pl.add_argument("--task", help="task to label (default: the spec's first, which pretrains the supernet)")
    pl.add_argument("--seed", type=int, help="seed of the draw (default: the spec's seed)")
    pl.add_argument("--supernet-epochs", type=int, metavar="E",
                    help="epochs of single-path supernet training on the spec's first task (default: train.epochs)")
    pl.add_argument("--head-epochs", type=int, metavar="H", help="epochs of shared-head training (default: "
                                                                 "train.epochs)")
    pl.add_argument("--finetune-steps", type=int, default=50, metavar="F",
                    help="steps fine-tuning each arch's path with the shared head (default 50)")
    pl.add_argument("--bins", type=int, default=5, help="depth bins of the latent-sampling population (default 5)")
    pl.add_argument("--per-bin", type=int, default=3, metavar="N", help="archs per depth bin (default 3)")
    pl.add_argument("--sampling", choices=("latent", "body"), default="latent",
                    help="latent: the head learns from samples over the population (AIO-P); body: body swapping, "
                         "one body per minibatch")
    pl.add_argument("--rule", choices=("uniform", "fair", "sandwich", "mixture"), default="uniform",
                    help="the supernet's sampling rule (bench supernet-rank --rule; default uniform)")
    pl.add_argument("--supernet", metavar="FILE", help="a supernet.pt of another pseudo-label folder (same spec and "
                                                       "--supernet-epochs), used instead of training one")
    add_overrides(pl)
    pl.set_defaults(handler=_pseudo_label)

    r = actions.add_parser("supernet-rank", help="train the spec's supernet one-shot (or take --supernet) and rank "
                                                 "the archs of a performance dataset on its shared weights: Spearman "
                                                 "and Kendall against the trained labels, beside the zero-cost "
                                                 "baselines")
    r.add_argument("spec")
    r.add_argument("dataset", help="a performance dataset folder (bench collect) of the spec's space and data")
    r.add_argument("--out", required=True, help="folder of the supernet and the scores; an unfinished one is resumed")
    r.add_argument("--epochs", type=int, metavar="E", help="supernet epochs (default: train.epochs)")
    r.add_argument("--rule", choices=("uniform", "fair", "sandwich", "mixture"), default="uniform",
                   help="paths each step trains: uniform (one random path, SPOS), fair (every option of every "
                        "decision once, FairNAS), sandwich (largest, smallest and --paths random, BigNAS), mixture "
                        "(a Gumbel-softmax mix of every option at --temperature, DNAS's warm-up)")
    r.add_argument("--temperature", type=float, default=5.0, metavar="T",
                   help="mixture: the Gumbel-softmax temperature (default 5.0)")
    r.add_argument("--paths", type=int, default=2, metavar="N", help="sandwich: random paths per step (default 2)")
    r.add_argument("--no-distill", action="store_true",
                   help="sandwich: the other paths learn from the labels, not from the largest path's output")
    r.add_argument("--bn-batches", type=int, default=8, metavar="N",
                   help="training batches that re-estimate each path's BatchNorm statistics (default 8)")
    r.add_argument("--first", type=int, metavar="N", help="score only the first N archs of the dataset's plan")
    r.add_argument("--supernet", metavar="FILE", help="a finished supernet.pt of another --out (same spec, --epochs "
                                                      "and --rule), the supernet.pt a oneshot run keeps, or a "
                                                      "run's checkpoints/search.pt (a DNAS search's supernet; its "
                                                      "space, data and tasks the spec's), used instead of training "
                                                      "one")
    r.add_argument("--labels-again", metavar="DIR",
                   help="the dataset's archs trained again with another seed (benchmarks/label_noise.py writes one): "
                        "the labels' agreement with themselves, printed as a ranker, is the ceiling of any ranking")
    r.add_argument("--workers", type=int, default=1, help="processes scoring archs at once (default 1)")
    add_overrides(r)
    add_executor(r, "the scoring")
    r.set_defaults(handler=_supernet_rank)


def _collect(args: argparse.Namespace) -> int:
    from nascore.errors import NascoreError
    from nascore.performance.collect import collect
    from nascore.spec import load_spec

    if args.archs < 1 or args.workers < 1:
        raise NascoreError("--archs and --workers must be at least 1")
    spec = load_spec(args.spec, args.overrides)
    result = collect(spec, Path(args.out), args.archs, spec.seed if args.seed is None else args.seed,
                     executor(args, spec, args.workers))
    rate = f", {result['archs_per_hour']:.0f} archs/hour" if result["archs_per_hour"] else ""
    print(f"collected {result['collected']} archs in {result['seconds']:.0f} s{rate}; "
          f"{args.archs} of {args.archs} in {args.out}")
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    from nascore.errors import NascoreError
    from nascore.performance.pseudolabel import FLAGS, Options, pseudo_label
    from nascore.spec import load_spec

    if args.archs < 1:
        raise NascoreError(f"--archs must be at least 1, not {args.archs}")
    spec = load_spec(args.spec, args.overrides)
    options = Options(task=args.task, supernet_epochs=args.supernet_epochs, head_epochs=args.head_epochs,
                      finetune_steps=args.finetune_steps, bins=args.bins, per_bin=args.per_bin,
                      sampling=args.sampling, rule=args.rule)
    for key in ("supernet_epochs", "head_epochs"):  # 0 would read as "the default"
        if getattr(options, key) is not None and getattr(options, key) < 1:
            raise NascoreError(f"{FLAGS[key]} must be a whole number of at least 1, not {getattr(options, key)}")
    result = pseudo_label(spec, Path(args.out), args.archs, spec.seed if args.seed is None else args.seed, options,
                          supernet_from=Path(args.supernet) if args.supernet else None)
    s = result["seconds"]
    check = f" (its random paths score {result['supernet_check']:.3f} on {result['pretrain_task']})" \
        if result["supernet_check"] is not None else ""
    shared = f"supernet {s['supernet']:.0f} s{check}, shared head {s['head']:.0f} s" if s["head"] is not None else \
        "nothing trained"
    per_arch = f", fine-tune + evaluation {s['finetune_per_arch']:.1f} s per arch" \
        if s.get("finetune_per_arch") is not None else ""
    print(f"pseudo-labelled {result['labelled']} archs on {result['task']} ({result['sampling']} sampling): "
          f"{shared}{per_arch}; {result['done']} of {result['archs']} in {args.out}")
    return 0


def _supernet_rank(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from nascore.errors import NascoreError
    from nascore.performance.oneshot import OneShot
    from nascore.performance.ranking import Options, supernet_rank
    from nascore.spec import load_spec

    if args.workers < 1:
        raise NascoreError(f"--workers must be at least 1, not {args.workers}")
    try:
        options = Options(epochs=args.epochs, bn_batches=args.bn_batches,
                          rule=OneShot(rule=args.rule, paths=args.paths, distill=not args.no_distill,
                                       temperature=args.temperature))
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][-1]).replace("_", "-")
        raise NascoreError(f"{flag}: {error['msg']}") from None
    spec = load_spec(args.spec, args.overrides)
    result = supernet_rank(spec, Path(args.dataset), Path(args.out), options,
                           supernet_from=Path(args.supernet) if args.supernet else None, first=args.first,
                           executor=executor(args, spec, args.workers),
                           again=Path(args.labels_again) if args.labels_again else None)
    trained = f"{result['epochs']} epochs, rule {args.rule}, {result['supernet_seconds']:.0f} s" \
        if result["supernet"] is None else f"taken from {result['supernet']}"
    print(f"supernet: {trained} (an arch trained standalone: {result['standalone_seconds_per_arch']} s); scoring "
          f"{result['scoring_seconds']:.0f} s")
    print(f"{'ranker':<20} {'spearman':>9} {'kendall':>8} {'n':>5}   against {result['label']}")
    for name, c in result["correlations"].items():
        rho, tau = (f"{v:.3f}" if v is not None else "-" for v in (c["spearman"], c["kendall"]))
        print(f"{name:<20} {rho:>9} {tau:>8} {c['n']:>5}")
    print(f"written to {Path(args.out) / 'ranking.json'}")
    return 0
