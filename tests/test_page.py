"""The results page and the headline readings (experiments/_page.py, experiments/_headline.py)."""

import dataclasses
import json
import types
from html.parser import HTMLParser
from pathlib import Path

import pytest

from experiments import _headline, _page
from experiments._io import _mark


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("href", "src"):
            if name in attrs:
                self.targets.append(attrs[name])


def _module(headlines):
    module = types.ModuleType("fake_experiment", "A fake experiment: one line that says it all.")

    class Config:
        """Run card. `python -m experiments run fake`."""

    module.Config = Config
    module.HEADLINES = headlines
    return module


def _result(root: Path, name: str, metrics: dict, figures=("a.png",)) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"quick": True, "seed": 0, **metrics}))
    (folder / "config.json").write_text("{}")
    for fig in figures:
        (folder / fig).write_bytes(b"\x89PNG\r\n\x1a\n")
    _mark(folder, ["metrics.json", "config.json", *figures])  # as `write_results` does
    return folder


HEADLINES = (
    _headline.Headline("orders/0/order", "fitted order", expected=1.0, tol=0.1),
    _headline.Headline("error", "max error", high=1e-8),
    _headline.Headline("absent", "not written", low=0.0),
    _headline.Headline("nonfinite", "a NaN", expected=0.0, tol=1.0),
    _headline.Headline("count", "a count (no prediction)"),
    _headline.Headline("error", "only in full mode", high=1.0, full_only=True),
)


def test_headlines_are_read_against_their_predictions():
    metrics = {"orders": [{"order": 1.3}], "error": 1e-10, "nonfinite": None, "count": 7}
    status = {r.headline.label: r.status for r in _headline.read(HEADLINES, metrics)}
    assert status == {
        "fitted order": "off",
        "max error": "ok",
        "not written": "missing",
        "a NaN": "non-finite",
        "a count (no prediction)": "info",
        "only in full mode": "ok",
    }
    quick = {
        r.headline.label: r.status for r in _headline.read(HEADLINES, {**metrics, "quick": True})
    }
    assert quick["only in full mode"] == "full mode only" and quick["max error"] == "ok"
    text = _headline.text(_headline.read(HEADLINES, metrics))
    assert "1.3" in text and "expected 1 ± 0.1" in text and "OFF" in text


def test_headline_needs_a_tolerance_with_its_value():
    with pytest.raises(ValueError, match="together"):
        _headline.Headline("k", "label", expected=1.0)


def test_every_link_and_image_of_the_page_resolves(tmp_path):
    _result(tmp_path, "alpha", {"orders": [{"order": 1.01}], "error": 1e-12}, ("x.png", "y.png"))
    _result(tmp_path, "beta", {"error": 1.0})
    (tmp_path / "gamma").mkdir()  # not a dynopt result: left out
    modules = {n: _module(HEADLINES) for n in ("alpha", "beta", "gamma")}
    page = _page.write_page(tmp_path, modules, ["alpha", "beta", "gamma"])
    text = page.read_text()
    parser = _Links()
    parser.feed(text)
    files = [t for t in parser.targets if not t.startswith("#")]
    assert len([t for t in files if t.endswith(".png")]) == 2 * 3  # link + image per figure
    for target in files:
        assert (tmp_path / target).is_file(), target
    for anchor in (t[1:] for t in parser.targets if t.startswith("#")):
        assert f'id="{anchor}"' in text
    assert "gamma" not in text and "one line that says it all" in text
    assert 'class="ok"' in text and 'class="off"' not in text.split('id="beta"')[0]


def test_a_foreign_index_html_is_not_replaced(tmp_path):
    _result(tmp_path, "alpha", {"error": 1e-12})
    (tmp_path / "index.html").write_text("<html>my own page</html>")
    with pytest.raises(ValueError, match="not written by dynopt"):
        _page.write_page(tmp_path, {"alpha": _module(HEADLINES)}, ["alpha"])
    assert (tmp_path / "index.html").read_text() == "<html>my own page</html>"
    (tmp_path / "index.html").unlink()
    _page.write_page(tmp_path, {"alpha": _module(HEADLINES)}, ["alpha"])
    _page.write_page(tmp_path, {"alpha": _module(HEADLINES)}, ["alpha"])  # its own page: replaced


@dataclasses.dataclass
class _Orders:
    name: str
    orders: list[float]


def _orders_section(config) -> dict[str, _Orders]:
    return {"sgd": _Orders("sgd <fast>", [1.01, 2.0]), "adam": _Orders("adam", [0.93, 1.88])}


def _orders_table(r):
    return ["optimizer", "orders"], [
        [o.name, "/".join(f"{x:.2f}" for x in o.orders)] for o in r.a.values()
    ]


def test_an_experiments_tables_are_printed_and_shown_on_the_page(tmp_path, capsys, monkeypatch):
    """`TABLES` are drawn from the saved results alone, like figures: printed after a run (the
    CLI's report) and shown, escaped, on the results page; a table a mode lacks (`None`) is left
    out."""
    from experiments import __main__ as cli, _card
    from experiments._io import write_results

    module = _module(HEADLINES)
    module.SECTIONS = {"a": _orders_section}
    module.TABLES = {"orders <table>": _orders_table, "full only": lambda r: None}
    metrics, arrays = _card.run_sections(module.SECTIONS, config=None)
    write_results(
        tmp_path / "alpha", config={}, metrics=metrics, arrays=arrays, figures=lambda d: []
    )
    text = _page.write_page(tmp_path, {"alpha": module}, ["alpha"]).read_text()
    assert "<caption>orders &lt;table&gt;</caption>" in text and "full only" not in text
    assert "<td>sgd &lt;fast&gt;</td><td>1.01/2.00</td>" in text
    monkeypatch.setattr(cli, "get", lambda name: module)
    cli._report("alpha", tmp_path / "alpha", 1.0)  # the CLI's report of a finished run
    printed = capsys.readouterr().out.splitlines()
    start = printed.index("orders <table>")
    assert printed[start + 1 :] == [
        "optimizer   orders",
        "----------  ---------",
        "sgd <fast>  1.01/2.00",
        "adam        0.93/1.88",
    ]
    # A result this version cannot rebuild (e.g. written by an older one): said, not raised.
    (tmp_path / "alpha" / "data.npz").unlink()
    text = _page.write_page(tmp_path, {"alpha": module}, ["alpha"]).read_text()
    assert "the saved result cannot be read" in text


def test_the_page_shows_each_experiments_whole_summary_as_list_does(tmp_path):
    """The page used to show a docstring's first line: five of the twelve summaries stopped
    mid-sentence ("...the central flow; where the"). It shows the whole first paragraph, the
    same summary as `python -m experiments list`."""
    import experiments

    module = _module(HEADLINES)
    module.__doc__ = "A fake experiment whose summary\ngoes on over two lines.\n\nThe rest."
    _result(tmp_path, "alpha", {"error": 1e-12})
    text = _page.write_page(tmp_path, {"alpha": module}, ["alpha"]).read_text()
    assert "<p>A fake experiment whose summary goes on over two lines.</p>" in text
    assert "The rest" not in text
    for name in experiments.EXPERIMENTS:
        assert _page._summary(experiments.get(name))[0] == experiments.summary(name), name


def test_a_users_own_png_in_a_result_folder_is_not_shown_as_a_figure(tmp_path):
    """The page shows the figures the result's marker lists, not every PNG in the folder."""
    folder = _result(tmp_path, "alpha", {"error": 1e-12}, ("x.png",))
    (folder / "my_sketch.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    text = _page.write_page(tmp_path, {"alpha": _module(HEADLINES)}, ["alpha"]).read_text()
    assert "alpha/x.png" in text and "my_sketch.png" not in text


def test_an_order_outside_its_asymptotic_regime_shows_its_verdict_not_a_number(tmp_path):
    # Before: a Headline could not name its order's verdict: a pre-asymptotic sweep's order
    # (NaN, as `compare` saves it) read "NON-FINITE", as if the run had diverged, and a raw
    # slope through pre-asymptotic errors read "ok" inside its band.
    order = _headline.Headline(
        "p/order", "order of GD vs flow", expected=1.0, tol=0.1, verdict="p/verdict"
    )
    for verdict, value in (("pre-asymptotic", None), ("unstable", None), ("pre-asymptotic", 1.02)):
        [r] = _headline.read([order], {"p": {"order": value, "verdict": verdict}})
        assert (r.value, r.status, r.value_text()) == (None, verdict, verdict)
    for metrics in ({"p": {"order": 1.02, "verdict": "asymptotic"}}, {"p": {"order": 1.02}}):
        [r] = _headline.read([order], metrics)  # (the second saved before its verdict was)
        assert (r.value, r.status) == (1.02, "ok")
    metrics = {"p": {"order": None, "verdict": "pre-asymptotic"}}
    text = _headline.text(_headline.read([order], metrics))
    assert "PRE-ASYMPTOTIC" in text and "NON-FINITE" not in text
    page = _page.render(
        {"fake": _module((order,))}, {"fake": _result(tmp_path, "fake", metrics)}, tmp_path
    )
    assert '<td class="pre-asymptotic">pre-asymptotic</td>' in page
    assert ".pre-asymptotic" in page  # (styled as a number that is not there)


def test_the_printed_headlines_keep_their_columns():
    # Before: "full mode only" (14 characters) and a prediction over 24 characters pushed the
    # columns after them out of line.
    headlines = (
        _headline.Headline("a", "short", expected=0.707107, tol=0.001),
        _headline.Headline("b", "a longer label", expected=1.0, tol=0.1, full_only=True),
        _headline.Headline("c", "third", high=1e-6),
    )
    metrics = {"quick": True, "a": 0.7071, "c": 1e-9}
    lines = _headline.text(_headline.read(headlines, metrics)).splitlines()
    assert len({line.index("expected") for line in lines}) == 1, lines
    ends = [line.index("expected") + len("expected 0.707107 ± 0.001 ") for line in lines]
    assert [line[end:] for line, end in zip(lines, ends)] == ["ok", "", "ok"], lines
