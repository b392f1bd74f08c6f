"""``nascore report RUN``: the HTML page of a finished, an interrupted and a resumed tiny DNAS run parses, embeds
its plots as PNG images, lists the found arch and the spec; hostile text is escaped; bad sources exit 2 and write
nothing; headless Chromium renders the page (skipped without a Chromium binary)."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml

from nascore.cli import main
from tiny import dnas_spec

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "input", "link"}


class _Page(HTMLParser):
    """Tags, a stack check (every closed tag was open) and the images' sources."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.stack: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        elif tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    page.close()
    assert not page.errors and not page.stack, (page.errors, page.stack)
    return page


def png_images(page: _Page) -> list[bytes]:
    out = []
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG)
        out.append(data)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished tiny DNAS run (2 search epochs, the first weights only, 1 training epoch); the same run cut after
    its first search epoch (its metrics cut and its checkpoint marked epoch 0: what a kill leaves), and that cut
    run resumed with ``--resume``."""
    tmp = tmp_path_factory.mktemp("report")
    spec = dnas_spec(tmp / "cache", epochs=2, max_steps=1)
    spec["train"] = {"epochs": 1, "batch_size": 16, "lr": 0.05, "references": False}
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    done = tmp / "done"
    assert main(["run", str(spec_path), "--out", str(done)]) == 0
    cut = tmp / "cut"
    cut.mkdir()
    shutil.copy(done / "spec.yaml", cut / "spec.yaml")
    rows = [r for r in map(json.loads, (done / "metrics.jsonl").read_text().splitlines())
            if r["phase"] == "search" and r["epoch"] == 0]
    (cut / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ckpt = torch.load(done / "checkpoints" / "search.pt", weights_only=True)
    (cut / "checkpoints").mkdir()
    state = {**ckpt["state"], "decisions": ckpt["state"]["decisions"][:1]}
    torch.save({**ckpt, "epoch": 0, "state": state}, cut / "checkpoints" / "search.pt")
    resumed = tmp / "resumed"
    shutil.copytree(cut, resumed)
    assert main(["run", str(spec_path), "--out", str(resumed), "--resume"]) == 0
    return {"done": done, "cut": cut, "resumed": resumed}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["done", "resumed"])
def test_report_of_a_finished_and_a_resumed_run(runs, which, capsys):
    run = runs[which]
    assert main(["report", str(run)]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    page = parse(run / "report.html")
    assert {"html", "head", "body", "h1", "table", "img", "pre"} <= set(page.tags)
    images = png_images(page)
    assert len(images) >= 5  # search and train curves, the final distribution and its evolution, the Pareto front
    text = "".join(page.text)
    arch = json.loads((run / "arch.json").read_text())
    for name, choice in arch["choices"].items():
        assert re.search(rf"{name}\s*{re.escape(choice)}", text), name  # the found arch's table row
    assert "Distribution over options, by epoch" in text and "the last is epoch 1" in text
    # the distribution after every epoch, the one before a resume included
    from nascore.fileio import load_checkpoint

    history = load_checkpoint(run / "checkpoints" / "search.pt")["state"]["decisions"]
    assert [h["epoch"] for h in history] == [0, 1]
    for h in history:
        probs = [p for group in h["groups"].values() for p in group.values()]
        assert all(abs(sum(p) - 1) < 1e-5 for p in probs) and set(h["groups"]) == {"shared"}
    assert "Spec" in text and "digit-scenes" in text and "multiplicative" in text
    assert "search (2 epochs)" in text and "train (1 epochs)" in text


@pytest.mark.slow
def test_report_of_an_interrupted_run_notes_what_is_missing(runs, tmp_path):
    out = tmp_path / "sub" / "cut.html"
    assert main(["report", str(runs["cut"]), "--out", str(out)]) == 0
    assert not (runs["cut"] / "report.html").exists()
    page = parse(out)
    text = " ".join(page.text)
    assert "no summary.json" in text and "no pareto.png" in text
    assert len(png_images(page)) == 3  # the search curves, the distribution and its evolution


def _tiny_dir(path: Path, summary: dict | None = None) -> Path:
    path.mkdir()
    (path / "spec.yaml").write_text("name: '<script>alert(1)</script>'\n")
    rows = [{"phase": "search", "epoch": e, "weight_loss": 2.0 - e, "temperature": 5.0 - e,
             "top_choices": {"<i>d</i>": "<b>opt</b>"}} for e in range(2)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_report_escapes_text_and_shows_references(tmp_path):
    entry = {"file": "arch.json", "described": [["<img src=x>", "k3_e1"]],
             "search": {"val/c/top1": 0.5}, "train": {"val/c/top1": 0.6, "macs": 10, "relative": 1.1},
             "references": {"fbnet_a": {"val/c/top1": 0.55, "macs": 20, "relative": 1.0}}}
    run = _tiny_dir(tmp_path / "run", {"archs": {"shared": entry}})
    assert main(["report", str(run)]) == 0
    html_text = (run / "report.html").read_text()
    assert "<script>" not in html_text and "<b>opt</b>" not in html_text and "<img src=x>" not in html_text
    assert "&lt;script&gt;" in html_text and "&lt;img src=x&gt;" in html_text
    page = parse(run / "report.html")
    assert len(png_images(page)) == 1  # only the curves: no checkpoint, no Pareto plot
    text = " ".join(page.text)
    assert "reference fbnet_a" in text and "results and references" in text and "no checkpoints/search.pt" in text


@pytest.mark.parametrize("case", ["missing", "empty", "file", "corrupt", "not-object", "summary"])
def test_bad_source_exit_2_and_no_file(tmp_path, case, capsys):
    run, out = tmp_path / "run", tmp_path / "out.html"
    if case == "empty":
        run.mkdir()
    elif case == "file":
        run.write_text("x")
    elif case != "missing":
        _tiny_dir(run)
        if case == "corrupt":
            (run / "metrics.jsonl").write_text('{"phase": "search", "epoch": 0}\n{not json\n{"phase": "s", '
                                               '"epoch": 1}\n')
        elif case == "not-object":
            (run / "metrics.jsonl").write_text("[1, 2]\n")
        else:
            (run / "summary.json").write_text("{broken")
    assert main(["report", str(run), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists() and not (run / "report.html").exists()


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(runs, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    report = tmp_path / "report.html"
    assert main(["report", str(runs["done"]), "--out", str(report)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", f"file://{report}"], capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.read_bytes().startswith(PNG)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    assert float(pixels.reshape(-1, pixels.shape[-1]).std(0).max()) > 0.05  # not one colour: something drew


@pytest.mark.slow
def test_report_of_a_two_task_reinforce_run(tmp_path):
    """reinforce keeps one policy per task and logs entropy per task: heatmaps per task."""
    from tiny import FLOPS, REINFORCE, search

    run = search(tmp_path, [{"name": "classification"}, {"name": "segmentation", "channels": 8}], REINFORCE,
                 cost=FLOPS, pareto={"samples": 2, "bn_batches": 1})
    assert main(["report", str(run)]) == 0
    page = parse(run / "report.html")
    assert len(png_images(page)) == 6  # curves, per task the distribution and its evolution, Pareto front
    text = " ".join(page.text)
    assert {"classification", "segmentation"} <= {t.strip() for t in page.text}  # a heading per task's policy
    assert "arch_classification.json" in text and "arch_segmentation.json" in text
