"""The results page: one static `index.html` over a results folder.

Per experiment: what it shows (its one-line summary and its run card), its headline numbers next
to the values its card predicts, and its figures. Everything is linked relatively, so the folder
can be moved or served as it is. Only experiments with a saved result appear; a folder that is
not a dynopt result (no marker) is left out.
"""

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

from . import _card, _headline, first_paragraph
from ._io import is_result, written
from ._stamp import is_stamped, PLACEHOLDER, write_stamped


# How every page dynopt has written begins; `written_by_dynopt` recognises a page by it (a title
# alone would claim a user's page that merely shares it).
_HEAD = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>dynopt results</title>"
)
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222;
       line-height: 1.45; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; }
nav a { margin-right: 0.8rem; }
section { border-top: 1px solid #ccc; margin-top: 2rem; padding-top: 0.5rem; }
.meta { color: #666; font-size: 0.9rem; }
details { margin: 0.5rem 0; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 0.6rem; font-size: 0.85rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 0.25rem 0.7rem; text-align: left; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
.ok { color: #1a7f37; font-weight: 600; }
.off, .missing, .non-finite, .pre-asymptotic, .unstable, .too-few-step-sizes {
  color: #b42318; font-weight: 600; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85rem; color: #555; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3rem; }
"""


_RESULT_FILES = ("metrics.json", "config.json", "data.npz")  # what the section is read from


def _esc(value) -> str:
    return html.escape(str(value))


def _summary(module: ModuleType) -> tuple[str, str]:
    """The module's summary (its docstring's whole first paragraph, as `list` shows it) and its
    run card (the Config docstring)."""
    first = first_paragraph(module.__doc__)
    config = getattr(module, "Config", None)
    card = (config.__doc__ or "").strip() if config is not None else ""
    return first, card


def _metrics(folder: Path) -> tuple[dict | None, str]:
    """The result's metrics.json as a dict, or `(None, why it cannot be read)`."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # (UnicodeDecodeError too)
        return None, f"{type(e).__name__}: {e}"
    if not isinstance(metrics, dict):
        return None, f"a JSON {type(metrics).__name__}, not an object"
    return metrics, ""


def _file_link(folder: Path, rel: str, name: str) -> str:
    """A link to the result's file `name`, or its name marked missing where there is no such
    file (removed by hand: a link would lead nowhere)."""
    if not (folder / name).is_file():
        return f'<span class="missing">{_esc(name)} missing</span>'
    return f'<a href="{_esc(rel)}/{_esc(name)}">{_esc(name)}</a>'


def _experiment_section(name: str, module: ModuleType, folder: Path, root: Path) -> str:
    first, card = _summary(module)
    rel = Path(os.path.relpath(folder, root)).as_posix()
    metrics, why = _metrics(folder)
    if metrics is None:  # one result that cannot be read must not cost the page the others
        return "\n".join([
            f'<section id="{_esc(name)}">',
            f"<h2>{_esc(name)}</h2>",
            f"<p>{_esc(first)}</p>",
            f'<p class="off">The saved result cannot be read: <a href="{_esc(rel)}/metrics.json">'
            f"metrics.json</a> ({_esc(why)}): changed since dynopt wrote it, or written by a "
            "version that wrote it otherwise.</p>",
            "</section>",
        ])  # fmt: skip
    mode = "quick" if metrics.get("quick") else "full"
    wall = metrics.get("wall_time_s")
    seed = metrics.get("seed")
    meta = f"{mode} mode, " + ("deterministic (no seed)" if seed is None else f"seed {seed}")
    if isinstance(wall, (int, float)):
        meta += f", {wall:.1f} s"
    files = " · ".join(_file_link(folder, rel, n) for n in ("metrics.json", "config.json"))
    parts = [
        f'<section id="{_esc(name)}">',
        f"<h2>{_esc(name)}</h2>",
        f"<p>{_esc(first)}</p>",
        f'<p class="meta">{_esc(meta)} · {files}</p>',
    ]
    ours = written(folder)
    if changed := [n for n in _RESULT_FILES if (folder / n).is_file() and n not in ours]:
        # (numbers read from an edited file are not what the run computed: say so by them)
        parts.append(
            f'<p class="off">{_esc(" and ".join(changed))} changed since dynopt wrote it: what '
            "is shown from it is not what the run computed.</p>"
        )
    if card:
        parts.append(f"<details><summary>Run card</summary><pre>{_esc(card)}</pre></details>")
    readings = _headline.read(getattr(module, "HEADLINES", ()), metrics)
    if readings:
        css = {r.status: r.status.replace(" ", "-") for r in readings}  # one class name each
        rows = "".join(
            f"<tr><td>{_esc(r.headline.label)}</td>"
            f'<td class="num">{_esc(r.value_text())}</td>'
            f"<td>{_esc(r.headline.describe())}</td>"
            f'<td class="{_esc(css[r.status])}">{_esc(r.status if r.status != "info" else "")}</td>'
            "</tr>"
            for r in readings
        )
        parts.append(
            "<table><thead><tr><th>headline</th><th>value</th><th>expected</th><th></th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )
    for title, columns, rows in _card.tables(module, folder):
        head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        parts.append(
            f"<table><caption>{_esc(title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )
    # A user's own PNG in a result folder is not one of its figures; a copied result's are.
    figures = sorted(f for f in folder.glob("*.png") if f.name in ours)
    if figures:
        parts.append('<div class="figures">')
        for fig in figures:
            src = f"{rel}/{fig.name}"
            parts.append(
                f'<figure><a href="{_esc(src)}"><img src="{_esc(src)}" alt="{_esc(name)}: '
                f'{_esc(fig.stem)}" loading="lazy"></a><figcaption>{_esc(fig.name)}'
                "</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def render(experiments: Mapping[str, ModuleType], folders: Mapping[str, Path], root: Path) -> str:
    """The page's HTML for the experiments whose result folders are given."""
    names = [n for n in experiments if n in folders]
    nav = " ".join(f'<a href="#{_esc(n)}">{_esc(n)}</a>' for n in names)
    body = "\n".join(_experiment_section(n, experiments[n], folders[n], root) for n in names)
    if not names:  # say so, not a blank page
        body = (
            "<p>No results in this folder yet. A result is a folder NAME beside this page, as "
            "<code>python -m experiments run-all --quick --out PARENT</code> writes them "
            "(PARENT: this page's folder).</p>"
        )
    return (
        f"{_HEAD}<style>{_STYLE}</style></head><body>"
        "<h1>dynopt results</h1>"
        "<p>Each experiment: what it shows, its headline numbers against the values its run card "
        "predicts, and its figures (click for full size).</p>"
        f"<nav>{nav}</nav>\n{body}\n<!-- {PLACEHOLDER} -->\n</body></html>\n"
    )


def written_by_dynopt(page: Path) -> bool:
    """Whether `page` is a results page dynopt wrote, as it wrote it: a regular file (not a
    link) that begins as every page `render` made and carries its stamp (`_stamp`: its own
    inode and digest; a copy or an edited page is the user's)."""
    page = Path(page)
    head = _HEAD.encode()
    try:
        if page.is_symlink() or not page.is_file():
            return False
        with open(page, "rb") as f:
            return f.read(len(head)) == head and is_stamped(page)
    except OSError:
        return False


def write_page(root: Path, experiments: Mapping[str, ModuleType], names: Sequence[str]) -> Path:
    """Write `root/index.html` over the dynopt results `root/NAME` of `names` (atomically, a
    file dynopt owns: an existing `index.html` is replaced only if dynopt wrote it). `root` must
    be the folder that holds results, not a result itself (`ValueError`)."""
    root = Path(root)
    if is_result(root):  # the page would be a file of the user's in that result
        raise ValueError(
            f"{root} is a dynopt result folder itself; the page goes in the folder that holds "
            f"results, e.g. --out {root.absolute().parent}"
        )
    folders = {
        n: root / n for n in names if is_result(root / n) and (root / n / "metrics.json").exists()
    }
    page = render({n: experiments[n] for n in names if n in folders}, folders, root)
    target = root / "index.html"
    if os.path.lexists(target) and not written_by_dynopt(target):  # (a link too: the user's)
        raise ValueError(
            f"{target} exists and was not written by dynopt as it is now (it is a copy, an "
            "edited page, or one from a dynopt before 2026-12-06, which stamped none); not "
            "replacing it: move it away, or choose another --out."
        )
    write_stamped(target, page)
    return target
