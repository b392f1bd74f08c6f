"""``nascore report RUN``: one self-contained HTML page of a run directory (plots embedded as base64 PNG, no
external assets, no JavaScript): loss and metric curves per phase, temperature and entropy, expected and derived
cost against epochs, the top choice per decision as the search went on, the distribution over options of
every decision after each search epoch (from the search checkpoint), the Pareto front, the found archs, the
comparison with references, and the spec. Every section whose files are missing is left out with a note; text from files is HTML-escaped."""
from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nascore.errors import NascoreError
from nascore.fileio import (
    ARCH_MAX_BYTES,
    SPEC_MAX_BYTES,
    atomic_write_text,
    load_checkpoint,
    parse_user_json,
    read_user_bytes,
    read_user_text,
)
from nascore.rundir import METRICS_FILE, SPEC_FILE, SUMMARY_FILE, read_metrics
from nascore.spec import load_spec

REPORT_FILE = "report.html"
PNG_MAX_BYTES = 64 << 20
_SKIP = {"phase", "epoch"}
#: what the page draws at most, checked before anything is drawn (more is refused, naming the file): phases of
#: metrics.jsonl, numeric series of a phase, cells of a phase's top-choice table; groups of the search checkpoint's
#: distributions, decisions per group, options per decision, and probabilities drawn over all epochs
MAX_PHASES, MAX_SERIES, MAX_TABLE_CELLS = 64, 256, 1_000_000
MAX_GROUPS, MAX_DECISIONS, MAX_OPTIONS, MAX_PROBABILITIES = 64, 256, 64, 2_000_000
#: most epoch ticks on an axis
_TICKS = 20

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:2px 8px;text-align:left}
th{background:#eee}img{max-width:100%;display:block;margin:0.5em 0}.note{color:#666;font-style:italic}
pre{background:#f6f6f6;padding:1em;overflow-x:auto}"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return _img(buf.getvalue())


def _img(data: bytes, alt: str = "plot") -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _fig(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


# -- what the files declare ------------------------------------------------------------------------------------
def _by_phase(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of each phase, in epoch order."""
    phases: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        phases.setdefault(r["phase"], []).append(r)
    return {phase: sorted(prow, key=lambda r: r["epoch"]) for phase, prow in phases.items()}


def _series(prow: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Each numeric value of a phase's rows: key -> (epoch, value) points, in one pass."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in prow:
        for k, v in r.items():
            if k not in _SKIP and _number(v):
                series.setdefault(k, []).append((r["epoch"], v))
    return series


def _check_rows(phases: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Refuse metrics rows that would draw more than the page draws at most (``MAX_PHASES`` ...)."""
    if len(phases) > MAX_PHASES:
        raise NascoreError(f"metrics file {path} holds {len(phases)} phases; the report draws at most {MAX_PHASES}")
    for phase, prow in phases.items():
        keys = {k for r in prow for k, v in r.items() if k not in _SKIP and _number(v)}
        if len(keys) > MAX_SERIES:
            raise NascoreError(f"metrics file {path}: phase '{phase}' has {len(keys)} numeric series; the report "
                               f"draws at most {MAX_SERIES}")
        chosen = [r["top_choices"] for r in prow if isinstance(r.get("top_choices"), dict)]
        names = {n for c in chosen for n in c}
        if len(names) * len(chosen) > MAX_TABLE_CELLS:
            raise NascoreError(f"metrics file {path}: phase '{phase}' has top choices of {len(names)} decisions over "
                               f"{len(chosen)} epochs; the report tabulates at most {MAX_TABLE_CELLS:,}")


def _check_history(history: list[dict[str, Any]], ckpt: Path) -> None:
    """Refuse distributions that would draw more than the page draws at most, or whose decisions change their
    number of options between epochs (each epoch is drawn against the last one's options)."""
    last = history[-1]
    for entry in history:
        if len(entry["groups"]) > MAX_GROUPS:
            raise NascoreError(f"{ckpt}: epoch {entry['epoch']} has {len(entry['groups'])} groups of decisions; the "
                               f"report draws at most {MAX_GROUPS}")
        for group, decisions in entry["groups"].items():
            if len(decisions) > MAX_DECISIONS:
                raise NascoreError(f"{ckpt}: group '{group}' has {len(decisions)} decisions; the report draws at "
                                   f"most {MAX_DECISIONS}")
            final = last["groups"].get(group, {})
            for name, probs in decisions.items():
                if len(probs) > MAX_OPTIONS:
                    raise NascoreError(f"{ckpt}: decision '{name}' has {len(probs)} options; the report draws at "
                                       f"most {MAX_OPTIONS}")
                if name in final and len(final[name]) != len(probs):
                    raise NascoreError(f"{ckpt}: decision '{name}' has {len(probs)} options after epoch "
                                       f"{entry['epoch']} and {len(final[name])} after epoch {last['epoch']}; "
                                       "expected the same options after every epoch")
    drawn = len(history) * sum(len(p) for decisions in last["groups"].values() for p in decisions.values())
    if drawn > MAX_PROBABILITIES:
        raise NascoreError(f"{ckpt}: its distributions hold {drawn:,} probabilities over {len(history)} epochs; the "
                           f"report draws at most {MAX_PROBABILITIES:,}")


def _epoch_ticks(ax: Any, epochs: list[int], fontsize: int) -> None:
    """At most ``_TICKS`` epoch labels on the x axis of an image with one column per epoch."""
    step = max(1, math.ceil(len(epochs) / _TICKS))
    ax.set_xticks(range(0, len(epochs), step), epochs[::step], fontsize=fontsize)


# -- sections ---------------------------------------------------------------------------------------------------
def _curves(phases: dict[str, list[dict[str, Any]]]) -> str:
    """One figure per phase: losses, validation metrics, temperature and entropy, costs, each against epochs."""
    if not phases:
        return _note(f"no {METRICS_FILE} rows: no curves")
    out = []
    for phase, prow in phases.items():
        series = _series(prow)
        keys = list(series)
        groups = {"losses": [k for k in keys if "loss" in k and not k.startswith("val/")],
                  "validation metrics": [k for k in keys if k.startswith("val/") and "loss" not in k],
                  "validation losses": [k for k in keys if k.startswith("val/") and "loss" in k],
                  "temperature": [k for k in keys if k.split("/")[0] == "temperature"],
                  "entropy": [k for k in keys if k.split("/")[0] == "entropy"],
                  "cost": [k for k in keys if "cost" in k]}
        used = {k for ks in groups.values() for k in ks}
        groups["other"] = [k for k in keys if k not in used]
        groups = {g: ks for g, ks in groups.items() if ks}
        if not groups:
            out.append(f"<h3>{_esc(phase)}</h3>" + _note("no numeric values"))
            continue
        fig = _fig(4.2 * min(len(groups), 3), 3.2 * math.ceil(len(groups) / 3))
        ncols = min(len(groups), 3)
        for i, (title, ks) in enumerate(groups.items()):
            ax = fig.add_subplot(math.ceil(len(groups) / 3), ncols, i + 1)
            for k in ks:
                ax.plot([p[0] for p in series[k]], [p[1] for p in series[k]], marker="o", ms=3, label=k)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
        out.append(f"<h3>{_esc(phase)} ({len(prow)} epochs)</h3>" + _png(fig))
    return "".join(out)


def _top_choices(phases: dict[str, list[dict[str, Any]]]) -> str:
    """The top choice per decision at each search epoch (rows' "top_choices"), as a table decisions x epochs."""
    out = []
    for phase, rows in phases.items():
        prow = [r for r in rows if isinstance(r.get("top_choices"), dict)]
        if not prow:
            continue
        names = list(dict.fromkeys(k for r in prow for k in r["top_choices"]))
        table = [[n, *[r["top_choices"].get(n, "") for r in prow]] for n in names]
        out.append(f"<h3>{_esc(phase)}</h3>" + _table(["decision", *[f"epoch {r['epoch']}" for r in prow]], table))
    return "".join(out) if out else _note("the metrics rows hold no top choices per decision")


def _option_names(run: Path) -> dict[str, tuple[str, ...]]:
    """Decision name -> option labels, from the run's spec (its space); empty when the spec cannot be built."""
    try:

        return {d.name: tuple(d.options) for d in load_spec(run / SPEC_FILE).space.create().decisions()}
    except Exception:  # noqa: BLE001 - labels are a nicety: without them options are numbered
        return {}


def _history(run: Path) -> tuple[list[dict[str, Any]] | None, str]:
    """The distributions a ``Distributing`` strategy had after each search epoch (``decisions`` in the search
    checkpoint: ``[{"epoch": e, "groups": {group: {decision: [p, ...]}}}]``), or None and why not."""
    ckpt = run / "checkpoints" / "search.pt"
    if not os.path.lexists(ckpt):
        return None, "no checkpoints/search.pt: the distribution over options is not shown"
    state = load_checkpoint(ckpt)
    history = state.get("state", {}).get("decisions") if isinstance(state, dict) else None
    if not isinstance(history, list) or not history:
        return None, ("the search checkpoint records no distribution over options (a strategy that is not "
                      "nascore.Distributing, e.g. one that samples archs without a learned distribution)")
    def valid(entry: Any) -> bool:
        return (isinstance(entry, dict) and type(entry.get("epoch")) is int and isinstance(entry.get("groups"), dict)
                and all(isinstance(decisions, dict) and all(
                    isinstance(probs, list) and probs and all(isinstance(p, float) for p in probs)
                    for probs in decisions.values()) and decisions for decisions in entry["groups"].values()))

    if not all(valid(entry) for entry in history):
        raise NascoreError(f"{ckpt}: its 'decisions' entry is not a list of {{epoch, groups: {{group: {{decision: "
                           "[probabilities]}}}}}} as nascore records it")
    _check_history(history, ckpt)
    return history, ""


def _distributions(history: list[dict[str, Any]] | None, why: str, run: Path) -> str:
    """Per group of decisions: the final distribution (decisions x options) and how each decision's distribution
    evolved over the search epochs (one small heatmap per decision, options x epochs)."""
    if history is None:
        return _note(why)
    labels = _option_names(run)
    last = history[-1]
    out = [_note(f"the distribution over options of each decision after every search epoch, as the strategy "
                 f"recorded it (nascore.Distributing) in checkpoints/search.pt; the last is epoch {last['epoch']}")]
    for group, final in last["groups"].items():
        names, width = list(final), max(len(p) for p in final.values())
        grid = [[*p, *[math.nan] * (width - len(p))] for p in final.values()]
        opts = labels.get(names[0]) if all(labels.get(n) == labels.get(names[0]) for n in names) else None
        fig = _fig(max(4.0, 0.6 * width + 2), max(2.5, 0.28 * len(names) + 1.2))
        ax = fig.add_subplot(1, 1, 1)
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xticks(range(width), opts if opts and len(opts) == width else range(width), fontsize=7,
                      rotation=45 if opts else 0)
        ax.set_title(f"{group}: probability per option after epoch {last['epoch']}", fontsize=9)
        fig.colorbar(im, ax=ax)
        rows = []
        for n, p in final.items():
            best = max(range(len(p)), key=p.__getitem__)  # argmax, as the strategies derive
            names_n = labels.get(n, ())
            rows.append([n, names_n[best] if len(names_n) == len(p) else best, p[best]])
        out.append(f"<h3>{_esc(group)}</h3>" + _png(fig) + _evolution(group, names, history, labels)
                   + _table(["decision", "top choice", "probability"], rows))
    return "".join(out)


def _evolution(group: str, names: list[str], history: list[dict[str, Any]], labels: dict[str, tuple[str, ...]]
               ) -> str:
    """One heatmap per decision of ``group``: probability of each option (rows) after each epoch (columns)."""
    cols = min(6, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = _fig(2.2 * cols, 1.9 * nrows + 0.4)
    epochs = [h["epoch"] for h in history]
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, cols, i + 1)
        series = [h["groups"].get(group, {}).get(name) for h in history]
        width = max(len(p) for p in series if p is not None)
        grid = [[p[o] if p is not None and o < len(p) else math.nan for p in series] for o in range(width)]
        ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        opts = labels.get(name, ())
        ax.set_yticks(range(width), opts if len(opts) == width else range(width), fontsize=5)
        _epoch_ticks(ax, epochs, 5)
        ax.set_title(name, fontsize=6)
    fig.suptitle(f"{group}: probability per option (rows) after each search epoch (columns)", fontsize=9)
    return _png(fig)


def _pareto(run: Path) -> str:
    png = run / "pareto.png"
    if os.path.lexists(png):
        data = read_user_bytes(png, "Pareto plot", PNG_MAX_BYTES)
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _img(data, "Pareto front")
        return _note("pareto.png is not a PNG image: not shown")
    return _note("no pareto.png (the run has no Pareto step, or it has not finished)")


def _archs(summary: dict[str, Any]) -> str:
    archs = summary.get("archs")
    if not isinstance(archs, dict) or not archs:
        return _note("summary.json lists no found arch")
    out = []
    for owner, entry in archs.items():
        if not isinstance(entry, dict):
            continue
        out.append(f"<h3>{_esc(owner)} ({_esc(entry.get('file', ''))})</h3>")
        described = entry.get("described")
        if isinstance(described, list) and all(isinstance(r, list) for r in described):
            out.append(_table(["decision", "choice"], [[*r[:2]] + [""] * (2 - len(r[:2])) for r in described]))
        elif isinstance(entry.get("choices"), dict):
            out.append(_table(["decision", "choice"], [[k, v] for k, v in entry["choices"].items()]))
        results = [[name, *_results_row(entry.get(name))] for name in ("search", "train")
                   if isinstance(entry.get(name), dict)]
        refs = entry.get("references")
        if isinstance(refs, dict):
            results += [[f"reference {n}", *_results_row(r)] for n, r in refs.items() if isinstance(r, dict)]
        if results:
            keys = _result_keys(entry)
            out.append("<h4>results" + (" and references" if isinstance(refs, dict) else "") + "</h4>")
            out.append(_table(["", *keys], [[r[0], *[r[1].get(k) for k in keys]] for r in results]))
    return "".join(out)


def _results_row(result: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in result.items() if not isinstance(v, (dict, list))}]


def _result_keys(entry: dict[str, Any]) -> list[str]:
    dicts = [entry.get("search"), entry.get("train"), *((entry.get("references") or {}).values()
                                                       if isinstance(entry.get("references"), dict) else [])]
    return list(dict.fromkeys(k for d in dicts if isinstance(d, dict) for k, v in d.items()
                              if not isinstance(v, (dict, list))))


# -- the page ---------------------------------------------------------------------------------------------------
def render(run: str | Path) -> str:
    """The HTML page of run directory ``run``; NascoreError when it is not one or its files are broken."""
    run = Path(run)
    if not run.is_dir():
        raise NascoreError(f"{run} is not a directory; expected a run directory (nascore run --out)")
    has_spec, has_metrics = os.path.lexists(run / SPEC_FILE), os.path.lexists(run / METRICS_FILE)
    if not (has_spec or has_metrics):
        raise NascoreError(f"{run} holds no run: neither {SPEC_FILE} nor {METRICS_FILE}")
    rows = read_metrics(run / METRICS_FILE)
    phases = _by_phase(rows)
    _check_rows(phases, run / METRICS_FILE)
    history, why = _history(run)  # checked too, before anything is drawn
    summary: dict[str, Any] = {}
    if os.path.lexists(run / SUMMARY_FILE):
        summary = parse_user_json(read_user_text(run / SUMMARY_FILE, "summary file", ARCH_MAX_BYTES),
                                  f"summary file {run / SUMMARY_FILE}")
        if not isinstance(summary, dict):
            raise NascoreError(f"summary file {run / SUMMARY_FILE}: expected a JSON object")
    spec_text = read_user_text(run / SPEC_FILE, "the run's spec", SPEC_MAX_BYTES) if has_spec else None

    sections = [
        ("Curves", _curves(phases)),
        ("Top choice per decision, by epoch", _top_choices(phases) if rows else _note("no metrics rows")),
        ("Distribution over options, by epoch", _distributions(history, why, run)),
        ("Pareto front", _pareto(run)),
        ("Found architectures", _archs(summary) if summary else
         _note("no summary.json (the run has not finished): no found arch or results")),
        ("Spec", f"<pre>{_esc(spec_text)}</pre>" if spec_text is not None else _note("no spec.yaml")),
    ]
    counts = ", ".join(f"{p}: {len(prow)} epochs" for p, prow in phases.items()) or "no epochs recorded"
    body = "".join(f"<h2>{_esc(title)}</h2>{content}" for title, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>nascore report: '
            f"{_esc(run.name)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>nascore report: {_esc(run.name)}</h1><p>{_esc(counts)}</p>{body}</body></html>\n")


def write_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Render ``run``'s report and write it atomically to ``out`` (default RUN/report.html); nothing is written
    when rendering fails."""
    page = render(run)
    path = Path(out) if out is not None else Path(run) / REPORT_FILE
    atomic_write_text(path, page)
    return path
