"""A new user's first hour with `python -m experiments` and `python -m benchmarks` (session 49's
probe, after test_cli_probe.py and test_results_safety.py): a results page over a result the user
pruned or edited by hand, `figures` over a metrics.json the user changed, and the benchmarks'
`--out` read as the experiments' is."""

import re

import pytest

from experiments import __main__ as cli

from . import test_experiments


naps = test_experiments.naps  # (the fixture: fake experiments in the registry)


def _links(page: str) -> set[str]:
    return set(re.findall(r'href="([^"#]+)"', page))


@pytest.mark.usefixtures("naps")
def test_the_page_links_no_file_the_user_removed(tmp_path, capsys):
    # Before: config.json removed by hand, and the page still linked nap/config.json (a link
    # to nothing).
    root = tmp_path / "res"
    assert cli.main(["run-all", "nap", "nap2", "--out", str(root)]) == 0
    (root / "nap" / "config.json").unlink()
    assert cli.main(["page", "--out", str(root)]) == 0
    page = (root / "index.html").read_text()
    links = _links(page)
    assert "nap/config.json" not in links and "config.json missing" in page
    assert {"nap/metrics.json", "nap2/metrics.json", "nap2/config.json"} <= links
    assert all((root / link).is_file() for link in links)
