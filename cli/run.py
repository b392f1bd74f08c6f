"""``nascore run`` (search, and train with a ``train:`` block, as a spec says) and ``nascore validate``."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import Commands, add_executor, add_overrides, executor

if TYPE_CHECKING:
    from nascore.rundir import Run

# The library is imported inside the handlers: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    r = commands.add_parser("run", help="search (and train, with a train: block) as a spec says")
    r.add_argument("spec")
    r.add_argument("--out", help="run directory (default runs/<spec name>-<time>)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    r.add_argument("--supernet", metavar="FILE", help="reuse the supernet.pt of an earlier oneshot run (the same "
                                                      "space, data and tasks) instead of training one: the same as "
                                                      "--set strategy.supernet_file=FILE")
    add_overrides(r)
    add_executor(r, "the random strategy's archs and train.references")
    r.set_defaults(handler=_run)

    v = commands.add_parser("validate", help="check a spec; prints ok or every error")
    v.add_argument("spec")
    add_overrides(v)
    v.set_defaults(handler=_validate)


def _run(args: argparse.Namespace) -> int:
    from nascore.errors import NascoreError
    from nascore.run import run_spec
    from nascore.rundir import discard_unstarted, open_run
    from nascore.spec import load_spec

    overrides = list(args.overrides)
    if args.supernet:
        overrides.append(f"strategy.supernet_file={Path(args.supernet).resolve()}")
    spec = load_spec(args.spec, overrides)
    if args.resume and not args.out:
        raise NascoreError("--resume needs --out DIR, the run directory to continue")
    run = open_run(spec, Path(args.out) if args.out else default_out(Path(args.spec).stem), args.resume,
                   executor=executor(args, spec))
    run.reporter.log(f"run directory: {run.out_dir}")
    try:
        summary = run_spec(run)
    except NascoreError:
        discard_unstarted(run)
        raise
    print_summary(run, summary)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from nascore.spec import load_spec

    load_spec(args.spec, args.overrides)
    print("ok")
    return 0


def default_out(stem: str) -> Path:
    """A new run directory of a command without ``--out``: runs/<stem>-<time>."""
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def print_summary(run: Run, summary: dict[str, Any]) -> None:
    """Every found (or trained) arch of a run's summary: its decisions and its metrics after search, after training
    and of its references."""
    from nascore import distributed

    if not distributed.is_main():  # under torchrun rank 0 alone prints
        return
    for key, entry in summary["archs"].items():
        run.reporter.table(f"found arch ({key}) -> {run.out_dir / entry['file']}", entry["described"],
                           ("decision", "choice"))
        search = entry.get("search")  # validation on the supernet path; counts of the standalone network
        results = {f"{key} after search, epoch {search['epoch']}": search} if search else {}
        if "train" in entry:
            results[key] = entry["train"]
        results.update({f"reference {name}": res for name, res in entry.get("references", {}).items()})
        for label, res in results.items():
            metrics = ", ".join(f"{k[4:]}={v:.4f}" for k, v in res.items() if k.startswith("val/"))
            relative = f", relative task performance: {res['relative']:+.2%}" if res.get("relative") is not None else ""
            print(f"[{label}] multiply-adds: {res['macs'] / 1e6:.2f} M, params: {res['params'] / 1e6:.3f} M, "
                  f"validation: {metrics}{relative}")
