"""Executed lessons as web pages: one self-contained HTML page, or an istio.io (Hugo) tutorial page.

The HTML page is what the notebook showed, images embedded, the product page's iframe inline (inert: its links
and forms go nowhere), and widgets drawn from their saved state (no JavaScript, no CDN), through labkit's nbconvert
template (``labkit/templates/labkit_html``), which links every page to the index and to the next lesson.

The Hugo page follows the conventions of the istio.io "Learn Microservices" pages (see :func:`hugo_problems` for
the rules it checks): front matter with ``title``, ``overview``, ``weight``, ``owner`` and ``test``; the markdown
cells as the body; the code cells as ``{{< text bash >}}`` blocks showing the kubectl/curl command the cell stands
for (from the cell's metadata ``{"labkit": {"shell": "kubectl get pods"}}``) followed by the cell's real output,
read from the labkit record the output carries (:data:`RECORD`), not parsed back from its repr or HTML; and the
figures as PNG files beside ``index.md`` with ``{{< image >}}`` shortcodes.

Code cell metadata the Hugo export reads (all under ``"labkit"``): ``shell`` (a command or a list of them),
``output`` ("auto", "none", or "error" to show an error's message), ``grep`` (a regular expression: show what
``grep -oE`` prints over the cell's page or text, for a command ending in ``| grep -oE ...``), ``caption`` /
``captions`` and ``figure`` / ``figures`` (the figures' captions and file names), ``hugo: "skip"``.

Example:
    >>> from labkit import export
    >>> export.write_html("out/03-chaos-one-pod.ipynb", "site")           # site/03-chaos-one-pod.html
    >>> export.write_hugo("out/03-chaos-one-pod.ipynb", "content")        # content/chaos-one-pod/index.md
"""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

__all__ = [
    "HUGO_OWNER",
    "RECORD",
    "HugoPage",
    "hugo_problems",
    "inert_page",
    "load",
    "page_meta",
    "static_widgets",
    "to_html",
    "to_hugo",
    "write_html",
    "write_hugo",
]

HUGO_OWNER = "istio/wg-docs-maintainers"
"""The ``owner`` of every page in istio.io's microservices series."""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

RECORD = "application/vnd.labkit.record+json"
"""The MIME type of the data an output carries besides its display, a JSON object with a ``"kind"``:

- ``{"kind": "exec", "pod", "container", "command": [...], "stdout", "stderr", "returncode"}``
- ``{"kind": "page", "url", "status", "html", "sections": {name: bool}}``
- ``{"kind": "chaos", "summary", "action": {...}}``
- ``{"kind": "recovery", "columns": [...], "rows": [[...], ...]}``
- ``{"kind": "mesh", "steps": [{"command", "lines": [...]}], "yaml", "namespace"}``: Istio rules applied or removed,
  injection enabled; ``command`` is the kubectl equivalent (``kubectl apply -f - <<EOF`` and the YAML for a rule
  given in Python), shown by the Hugo export when the cell has no ``shell`` metadata

The exports read it instead of parsing a repr or an HTML table back; outputs without it (DataFrames, plain
values) are shown from their own text or table.
"""

TEMPLATES = Path(__file__).resolve().parent / "templates"
"""nbconvert templates shipped with labkit (``labkit_html``: the lesson page)."""

NotebookLike = nbformat.NotebookNode | str | os.PathLike[str]

# "### Step 3: Kill details in one pod" (also "Step 3." / "Step 3 -"), at any heading level below the title.
_STEP = re.compile(r"^#{2,4}\s*Step\s+(\d+)\s*[.:\-–—]?\s*(.*?)\s*$", re.IGNORECASE)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ORDERED = re.compile(r"^(\s*)\d+[.)]\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_NB_LINK = re.compile(r"\]\((?:\./)?(\d\d-[\w-]+)\.ipynb(#[\w-]+)?\)")
_MD_LESSON_LINK = re.compile(r"\[([^\]]+)\]\((?:\./)?(\d\d-[\w-]+)\.html(#[\w-]+)?\)")


def load(notebook: NotebookLike) -> nbformat.NotebookNode:
    """A notebook from a path, or the node itself (not copied)."""
    if isinstance(notebook, nbformat.NotebookNode):
        return notebook
    read: Any = nbformat.read  # untyped in nbformat
    node: nbformat.NotebookNode = read(os.fspath(notebook), as_version=4)
    return node


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _labkit_meta(obj: Any) -> dict[str, Any]:
    meta = obj.get("metadata", {}) or {}
    value = meta.get("labkit", {}) or {}
    return dict(value) if isinstance(value, dict) else {}


def _tags(cell: Any) -> list[str]:
    return list((cell.get("metadata", {}) or {}).get("tags", []) or [])


# ------------------------------------------------------------------------------------------------ page metadata


def page_meta(notebook: NotebookLike, name: str = "") -> dict[str, Any]:
    """Title, overview and weight of a lesson.

    From the notebook's metadata ``{"labkit": {"title", "overview", "weight"}}`` where given; otherwise the title
    is the first ``#`` heading, the overview the first paragraph after it, and the weight comes from the file
    name's number (``03-...`` -> 30).
    """
    nb = load(notebook)
    meta = _labkit_meta(nb)
    title = str(meta.get("title") or "")
    overview = str(meta.get("overview") or "")
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = _source(cell).strip().splitlines()
        if lines and lines[0].startswith("# "):
            title = title or lines[0][2:].strip()
            paragraph = " ".join(line.strip() for line in _first_paragraph(lines[1:]))
            overview = overview or paragraph
            break
    weight = meta.get("weight")
    if weight is None:
        match = re.match(r"(\d+)-", name or "")
        weight = int(match.group(1)) * 10 if match else 10
    return {"title": title or name or "Lesson", "overview": _sentence(overview) or title, "weight": int(weight)}


def _first_paragraph(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if not line.strip():
            if out:
                break
            continue
        if line.lstrip().startswith(("#", "*", "-", "|", ">")) or _ORDERED.match(line):
            if out:
                break
            continue
        out.append(line)
    return out


def _sentence(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


# ------------------------------------------------------------------------------------------------ widgets


def static_widgets(notebook: NotebookLike) -> nbformat.NotebookNode:
    """A copy of the notebook whose widget outputs are plain HTML drawn from the saved widget state.

    A static page has no kernel and, self-contained, no widget JavaScript either; the last state of each
    widget (the live pods table, a chaos panel) is still what the reader wants to see.
    """
    nb = copy.deepcopy(load(notebook))
    widgets = (nb.metadata.get("widgets") or {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            if WIDGET_VIEW not in data:
                continue
            model_id = data[WIDGET_VIEW].get("model_id", "")
            rendered = _widget_html(model_id, widgets, depth=0)
            data.pop(WIDGET_VIEW)
            if rendered:
                data["text/html"] = f"<div class='labkit-widget'>{rendered}</div>"
    nb.metadata.pop("widgets", None)
    return nb


def _widget_html(model_id: str, models: dict[str, Any], depth: int) -> str:
    model = models.get(model_id.removeprefix("IPY_MODEL_"))
    if model is None or depth > 20:
        return ""
    name = str(model.get("model_name", ""))
    state = model.get("state", {}) or {}
    desc = html.escape(str(state.get("description", "") or ""))
    value = state.get("value")
    if name in ("HTMLModel", "HTMLMathModel"):
        return str(value or "")
    if name in ("LabelModel", "TextModel", "TextareaModel"):
        label = f"<b>{desc}</b> " if desc else ""
        return f"<div>{label}{html.escape(str(value or ''))}</div>"
    if name.endswith("BoxModel") or name == "BoxModel":
        direction = "row" if name in ("HBoxModel", "GridBoxModel") else "column"
        inner = "".join(_widget_html(str(c), models, depth + 1) for c in state.get("children", []))
        return f"<div style='display:flex;flex-direction:{direction};gap:6px'>{inner}</div>"
    if name == "ButtonModel":
        if "labkit-solve" in (state.get("_dom_classes") or []):
            return ""  # "Solve it" runs a solution in a kernel; a page has none (its solution stays collapsed)
        return f"<button disabled>{desc}</button>"
    if name in ("CheckboxModel", "ToggleButtonModel"):
        checked = " checked" if value else ""
        return f"<label><input type='checkbox' disabled{checked}> {desc}</label>"
    if name in ("DropdownModel", "SelectModel", "RadioButtonsModel", "ToggleButtonsModel"):
        labels = list(state.get("_options_labels", []) or [])
        index = state.get("index")
        chosen = labels[index] if isinstance(index, int) and 0 <= index < len(labels) else ""
        return f"<div>{f'<b>{desc}</b> ' if desc else ''}<code>{html.escape(str(chosen))}</code></div>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        top = state.get("max", 100)
        return f"<div>{desc} <progress value='{value or 0}' max='{top}'></progress></div>"
    if name == "OutputModel":
        return "".join(_output_html(o) for o in state.get("outputs", []) or [])
    return f"<div>{desc}</div>" if desc else ""


def _output_html(out: dict[str, Any]) -> str:
    if out.get("output_type") == "stream":
        return f"<pre>{html.escape(_text(out.get('text', '')))}</pre>"
    data = out.get("data") or {}
    if "text/html" in data:
        return _text(data["text/html"])
    if "image/png" in data:
        return f"<img alt='figure' src='data:image/png;base64,{_text(data['image/png']).strip()}'>"
    if "text/plain" in data:
        return f"<pre>{html.escape(_text(data['text/plain']))}</pre>"
    if out.get("output_type") == "error":
        return f"<pre>{html.escape(str(out.get('ename', '')))}: {html.escape(str(out.get('evalue', '')))}</pre>"
    return ""


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


# ------------------------------------------------------------------------------------------------ HTML


def to_html(notebook: NotebookLike, *, title: str | None = None, index: str | None = "index.html",
            name: str = "") -> str:
    """One self-contained HTML page of the notebook as it ran (images embedded, widgets drawn statically).

    The page is nbconvert's "lab" page through labkit's template (``labkit/templates/labkit_html``): no script
    from a network, each figure described by its caption, links to other lessons pointing at their pages
    (``04-chaos-all-pods.ipynb`` -> ``04-chaos-all-pods.html``), a link back to ``index`` (None: none) and to the
    next lesson at the top and the bottom. The product page shown in an iframe is a static copy: tall enough to
    show it whole, its links and forms inert (the cluster that served it is gone when the page is read).

    Args:
        notebook: an executed notebook (a path or a node).
        title: the page title (default: the lesson's, see :func:`page_meta`).
        index: where the lessons' index is, relative to the page; None for a page on its own.
        name: the notebook's file name without extension, for the title's fallback.

    Example:
        >>> page = export.to_html("out/04-chaos-all-pods.ipynb")
        >>> "<iframe" in page and "data:image/png;base64" in page
        True
    """
    from nbconvert import HTMLExporter

    if not name and not isinstance(notebook, nbformat.NotebookNode):
        name = Path(os.fspath(notebook)).stem
    nb = static_widgets(notebook)
    if title is None and not nb.metadata.get("title"):
        title = page_meta(nb, name)["title"]
    if title:
        nb.metadata["title"] = title
    next_link = _lesson_pages(nb)
    _describe_figures(nb)
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data") or {}
            if "text/html" in data:
                data["text/html"] = _static_iframes(_text(data["text/html"]))
    exporter_class: Any = HTMLExporter  # untyped in nbconvert
    exporter = exporter_class(template_name="labkit_html", extra_template_basedirs=[str(TEMPLATES)])
    # nbconvert warns about images without alt text; labkit's template gives every figure its caption
    exporter.log.setLevel(logging.ERROR)
    nav: dict[str, str] = {}
    if index:
        nav["index"] = index
    if next_link:
        nav["next"], nav["next_title"] = next_link
    body, _ = exporter.from_notebook_node(nb, resources={"labkit": nav})
    return str(body)


def write_html(notebook: NotebookLike, out_dir: str | os.PathLike[str], name: str | None = None, *,
               index: str | None = "index.html") -> Path:
    """Write :func:`to_html` as ``OUT_DIR/NAME.html`` (default: the notebook's file name) and return the path."""
    if name is None:
        name = Path(os.fspath(notebook)).stem if not isinstance(notebook, nbformat.NotebookNode) else "notebook"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.html"
    _write_atomic(path, to_html(notebook, index=index, name=name).encode("utf-8"))
    return path


def _lesson_pages(nb: nbformat.NotebookNode) -> tuple[str, str] | None:
    """Point the markdown's links to other lessons at their HTML pages; return the next lesson (the first lesson
    link under a "Next" heading, as its href and text), or None."""
    found: tuple[str, str] | None = None
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        source = _NB_LINK.sub(lambda m: f"]({m.group(1)}.html{m.group(2) or ''})", _source(cell))
        cell.source = source
        after = re.split(r"^#{1,6}\s+Next\b.*$", source, maxsplit=1, flags=re.MULTILINE)
        link = _MD_LESSON_LINK.search(after[1]) if len(after) == 2 else None
        if link and found is None:
            found = (f"{link.group(2)}.html{link.group(3) or ''}", link.group(1))
    return found


def _describe_figures(nb: nbformat.NotebookNode) -> None:
    """Give each figure its caption as the alt text the template writes (``output.metadata.labkit_alt``)."""
    captions = iter(_captions_in_order(nb))
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if "image/png" in (out.get("data") or {}):
                out.setdefault("metadata", {})["labkit_alt"] = next(captions, "Figure")


_IFRAME_SRCDOC = re.compile(r'(<iframe\b[^>]*?\ssrcdoc=")([^"]*)(")', re.IGNORECASE | re.DOTALL)
_ACTIVE_TAG = re.compile(r"<(a|area|form|base|button|input)\b([^>]*)>", re.IGNORECASE)
_TARGET_ATTR = re.compile(r"""\s(?:href|action|formaction)\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)


def _static_iframes(text: str) -> str:
    """The product pages in ``text`` (iframes with a ``srcdoc``) made inert: see :func:`inert_page`."""
    return _IFRAME_SRCDOC.sub(
        lambda m: m.group(1) + html.escape(inert_page(html.unescape(m.group(2))), quote=True) + m.group(3), text)


def inert_page(page: str) -> str:
    """A copy of a product page whose links and forms go nowhere: no ``<base>``, no ``href`` or ``action``.

    In an exported lesson the cluster that served the page is gone: "Sign in" or a login form would take the
    iframe to a dead URL. The page still looks the same.
    """
    def strip(m: re.Match[str]) -> str:
        if m.group(1).lower() == "base":
            return ""
        return f"<{m.group(1)}{_TARGET_ATTR.sub('', m.group(2))}>"

    return _ACTIVE_TAG.sub(strip, page)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ Hugo


@dataclass
class HugoPage:
    """What :func:`to_hugo` produced: the page's text and its figures (file name -> PNG bytes)."""

    slug: str
    text: str
    images: dict[str, bytes] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class _Body:
    """Collects markdown lines, tracking whether we are inside a numbered step (content indented 4)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.in_step = False

    @property
    def indent(self) -> str:
        return "    " if self.in_step else ""

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def block(self, lines: list[str]) -> None:
        """A block of markdown, indented under the current step, separated by blank lines."""
        while lines and not lines[0].strip():
            lines = lines[1:]
        while lines and not lines[-1].strip():
            lines = lines[:-1]
        if not lines:
            return
        self.blank()
        self.lines.extend(f"{self.indent}{line}" if line.strip() else "" for line in lines)


def to_hugo(notebook: NotebookLike, *, name: str = "", include_python: bool = False) -> HugoPage:
    """The lesson as an istio.io tutorial page (text and figures), without writing anything.

    Args:
        notebook: an executed notebook (a path or a node); an unexecuted one gives commands without output.
        name: the file name used for the weight and slug (``03-chaos-one-pod`` -> slug ``chaos-one-pod``).
        include_python: also show code cells that have no shell equivalent, as ``{{< text python >}}``.
    """
    nb = load(notebook)
    if not name and not isinstance(notebook, nbformat.NotebookNode):
        name = Path(os.fspath(notebook)).stem
    meta = page_meta(nb, name)
    slug = str(_labkit_meta(nb).get("slug") or re.sub(r"^\d+-", "", name) or _slug(meta["title"]))
    body = _Body()
    images: dict[str, bytes] = {}
    step_title = ""
    title_seen = False
    for cell in nb.cells:
        tags = _tags(cell)
        if "parameters" in tags or "injected-parameters" in tags or "remove-cell" in tags:
            continue
        if cell.cell_type == "markdown":
            lines = _source(cell).strip("\n").splitlines()
            if not title_seen and lines and lines[0].startswith("# "):
                title_seen = True
                lines = lines[1:]
            if not lines:
                continue
            step = _STEP.match(lines[0])
            if step:
                step_title = step.group(2).strip()
                body.in_step = False
                body.blank()
                first = _ensure_stop(step_title) if step_title else f"Step {step.group(1)}."
                body.lines.append(f"1.  {first}")
                body.in_step = True
                body.block(_markdown(lines[1:]))
            else:
                heading = _HEADING.match(lines[0])
                if heading or not body.in_step:
                    body.in_step = False
                    step_title = heading.group(2) if heading else step_title
                body.block(_markdown(lines))
        elif cell.cell_type == "code":
            _code_cell(cell, body, images, step_title or meta["title"], slug, include_python)
    text = _front_matter(meta) + "\n".join(body.lines).rstrip() + "\n"
    return HugoPage(slug=slug, text=text, images=images, meta=meta)


def write_hugo(notebook: NotebookLike, out_dir: str | os.PathLike[str], *, name: str = "",
               include_python: bool = False) -> Path:
    """Write the page bundle ``OUT_DIR/<slug>/index.md`` with its PNG figures beside it; return index.md's path.

    Raises:
        ValueError: the page breaks one of istio.io's format rules (the message lists them); nothing is written.
    """
    page = to_hugo(notebook, name=name, include_python=include_python)
    problems = hugo_problems(page.text, images=set(page.images))
    if problems:
        raise ValueError("the Hugo page would break istio.io's format rules:\n  " + "\n  ".join(problems))
    folder = Path(out_dir) / page.slug
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, data in page.images.items():
        _write_atomic(folder / file_name, data)
    index = folder / "index.md"
    _write_atomic(index, page.text.encode("utf-8"))
    return index


def _front_matter(meta: dict[str, Any]) -> str:
    # The groups and key order are those of the series' pages (title/overview, weight, owner/test). `test: no`
    # is written as istio.io writes it (YAML reads it as false; hugo_problems accepts both).
    def dump(values: dict[str, Any]) -> str:
        return str(yaml.safe_dump(values, sort_keys=False, allow_unicode=True, width=10_000))

    head = dump({"title": re.sub(r"\s+", " ", str(meta["title"])).strip(),
                 "overview": re.sub(r"\s+", " ", str(meta["overview"])).strip()})
    return f"---\n{head}\n{dump({'weight': int(meta['weight'])})}\nowner: {HUGO_OWNER}\ntest: no\n---\n\n"


def _ensure_stop(text: str) -> str:
    return text if text[-1:] in ".:!?" else text + "."


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


def _markdown(lines: list[str]) -> list[str]:
    """istio.io's list style: every ordered item ``1.`` + two spaces, its content indented 4 per level;
    links to other lessons point at their pages."""
    out: list[str] = []
    items: list[tuple[int, int]] = []  # open ordered items: (marker column, text column) in the source
    in_fence = False
    previous_blank = True
    for raw in lines:
        line = _NB_LINK.sub(lambda m: f"](../{re.sub(r'^[0-9]+-', '', m.group(1))}/{m.group(2) or ''})", raw)
        line = line.replace("\t", "    ").rstrip()
        if not line:
            out.append("")
            previous_blank = True
            continue
        indent = len(line) - len(line.lstrip(" "))
        match = None if in_fence else _ORDERED.match(line)
        if _FENCE.match(line):
            in_fence = not in_fence
        if match:
            while items and items[-1][0] > indent:
                items.pop()
            if items and items[-1][0] == indent:
                items.pop()
            level = len(items)
            items.append((indent, len(line) - len(match.group(2))))
            out.append(" " * (4 * level) + "1.  " + match.group(2))
        elif items:
            # content of the innermost item whose text column it reaches (or a lazy continuation line)
            while items and indent < items[-1][1] and previous_blank:
                items.pop()
            if items:
                depth = 4 * len(items)
                out.append(" " * depth + line[min(indent, items[-1][1]):])
            else:
                out.append(line)
        else:
            out.append(line)
        previous_blank = False
    return out


def _code_cell(cell: Any, body: _Body, images: dict[str, bytes], step_title: str, slug: str,
               include_python: bool) -> None:
    meta = _labkit_meta(cell)
    if meta.get("hugo") == "skip":
        return
    shell = meta.get("shell")
    commands = [shell] if isinstance(shell, str) else list(shell or [])
    outputs = cell.get("outputs", []) or []
    if commands:
        block = ["{{< text bash >}}"]
        for command in commands:
            cmd_lines = str(command).strip().splitlines()
            block.append(f"$ {cmd_lines[0]}")
            block.extend(cmd_lines[1:])
        if meta.get("grep"):
            block.extend(_grep_output(outputs, str(meta["grep"])))
        elif meta.get("output", "auto") != "none":
            block.extend(_text_output(outputs, show_error=meta.get("output") == "error"))
        block.append("{{< /text >}}")
        body.block(block)
    elif mesh := _mesh_block(outputs):
        # a rule applied from Python shows as the kubectl command (and YAML) it stands for, from its record
        body.block(["{{< text bash >}}", *mesh, "{{< /text >}}"])
    elif include_python and _source(cell).strip():
        body.block(["{{< text python >}}", *_source(cell).strip().splitlines(), "{{< /text >}}"])
    figures = [o for o in outputs if "image/png" in (o.get("data") or {})]
    names = meta.get("figures") or ([meta["figure"]] if meta.get("figure") else [])
    for i, (out, caption) in enumerate(zip(figures, _cell_captions(cell, step_title), strict=True)):
        data = base64.b64decode(_text(out["data"]["image/png"]))
        base = str(names[i]) if i < len(names) else _slug(caption)
        file_name = _unique(f"{slug}-{base}" if not base.startswith(slug) and i >= len(names) else base, images)
        images[file_name] = data
        body.block(["{{< image width=\"80%\"", f"    link=\"{file_name}\"", f"    caption=\"{_attr(caption)}\"",
                    "    >}}"])


def _cell_captions(cell: Any, step_title: str) -> list[str]:
    """The caption of each PNG the cell shows: from its metadata, else the PNG's title, else the step's title."""
    meta = _labkit_meta(cell)
    given = meta.get("captions") or ([meta["caption"]] if meta.get("caption") else [])
    out = []
    pngs = [o for o in cell.get("outputs", []) or [] if "image/png" in (o.get("data") or {})]
    for i, output in enumerate(pngs):
        if i < len(given):
            text = str(given[i])
        else:
            text = _png_title(base64.b64decode(_text(output["data"]["image/png"]))) or step_title
        out.append(_caption(text))
    return out


def _captions_in_order(nb: nbformat.NotebookNode) -> list[str]:
    """Every figure's caption, in the order the figures appear in the notebook."""
    step_title, captions = page_meta(nb)["title"], []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            first = _source(cell).strip().splitlines()[:1]
            step = _STEP.match(first[0]) if first else None
            heading = _HEADING.match(first[0]) if first else None
            if step and step.group(2):
                step_title = step.group(2)
            elif heading and heading.group(1) != "#":
                step_title = heading.group(2)
        elif cell.cell_type == "code":
            captions.extend(_cell_captions(cell, step_title))
    return captions


def _caption(text: str) -> str:
    # istio.io's build prints "MARKDOWN ERROR" for a caption ending with a period
    return re.sub(r"\s+", " ", str(text)).strip().rstrip(". ").strip() or "Figure"


def _attr(text: str) -> str:
    return text.replace('"', "'")


def _unique(base: str, taken: dict[str, bytes]) -> str:
    base = base.removesuffix(".png")
    name, n = f"{base}.png", 2
    while name in taken:
        name, n = f"{base}-{n}.png", n + 1
    return name


_OPAQUE = re.compile(r"^<[^<>]*>$", re.DOTALL)


def _record(out: dict[str, Any]) -> dict[str, Any] | None:
    """The labkit record an output carries (:data:`RECORD`), or None."""
    value = (out.get("data") or {}).get(RECORD)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return dict(value) if isinstance(value, dict) and isinstance(value.get("kind"), str) else None


def _record_lines(record: dict[str, Any]) -> list[str] | None:
    """What a terminal shows for a record: an exec's output, a recovery table; None for a kind it does not know."""
    kind = record["kind"]
    if kind == "exec":
        # kubectl exec prints the command's stdout and stderr, then says so when it failed
        lines = _terminal_lines(str(record.get("stdout") or "")) + _terminal_lines(str(record.get("stderr") or ""))
        code = record.get("returncode")
        if isinstance(code, int) and code != 0:
            lines.append(f"command terminated with exit code {code}")
        return lines
    if kind == "recovery":
        columns = [str(c) for c in record.get("columns") or []]
        rows = [["" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)) for v in row]
                for row in record.get("rows") or []]
        return _kubectl_table(columns, rows) if columns else []
    if kind == "chaos":
        return _terminal_lines(str(record.get("summary") or ""))
    if kind == "page":
        return []  # a page has no terminal form; the "grep" metadata shows its lines instead
    if kind == "mesh":
        return [line for step in record.get("steps") or [] for line in step.get("lines") or []]
    return None


def _mesh_block(outputs: list[dict[str, Any]]) -> list[str]:
    """The kubectl commands a mesh record stands for (``kubectl apply -f - <<EOF`` with its YAML, ``kubectl label
    namespace ...``), each followed by kubectl's lines: what istio.io's task pages show."""
    block: list[str] = []
    for out in outputs:
        record = _record(out)
        if record is None or record["kind"] != "mesh":
            continue
        for step in record.get("steps") or []:
            command = str(step.get("command") or "").strip().splitlines()
            if command:
                block.append(f"$ {command[0]}")
                block.extend(command[1:])
            block.extend(("  " + line if line.startswith("$ ") else line) for line in step.get("lines") or [])
    return block


def _text_output(outputs: list[dict[str, Any]], *, show_error: bool) -> list[str]:
    """The lines a terminal would have shown: stdout, labkit records, DataFrames as kubectl tables, plain values."""
    lines: list[str] = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream" and out.get("name") == "stdout":
            lines.extend(_terminal_lines(_text(out.get("text", ""))))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data") or {}
            record = _record(out)
            shown = _record_lines(record) if record is not None else None
            if shown is not None:
                lines.extend(shown)
                continue
            table = _html_table(_text(data.get("text/html", ""))) if "text/html" in data else None
            if table is not None:
                lines.extend(_kubectl_table(*table))
            elif "text/plain" in data and "image/png" not in data:
                # a value's own text; an object's repr ("<ProductPage ...>", "ExecResult(args=...)") is no
                # terminal output: without its record it is left out
                text = _text(data["text/plain"]).strip()
                if text and not _OPAQUE.match(text) and not re.match(r"^\w+\(\w+=", text):
                    lines.extend(_terminal_lines(_unquote(text)))
        elif kind == "error" and show_error:
            lines.extend(_terminal_lines(str(out.get("evalue", ""))))
    # a line starting with "$ " would be taken for a command
    return [("  " + line if line.startswith("$ ") else line) for line in lines]


_SRCDOC = re.compile(r'<iframe[^>]*\ssrcdoc="([^"]*)"', re.IGNORECASE | re.DOTALL)


def _grep_output(outputs: list[dict[str, Any]], pattern: str) -> list[str]:
    """What ``grep -oE PATTERN`` prints over the cell's page or its text output.

    The product page cannot be screenshotted without a browser; the lines this real page makes ``grep`` print
    (headings, error notices) show what the reader sees instead. The page is the ``page`` record's HTML (or,
    for an output without a record, the page inside its iframe).
    """
    sources: list[str] = []
    for out in outputs:
        data = out.get("data") or {}
        record = _record(out)
        if record is not None and record["kind"] == "page":
            sources.append(str(record.get("html") or ""))
            continue
        if record is not None and record["kind"] == "exec":
            sources.append(str(record.get("stdout") or ""))
            continue
        pages = [html.unescape(m) for m in _SRCDOC.findall(_text(data.get("text/html", "")))]
        if pages:
            sources.extend(pages)
        elif out.get("output_type") == "stream":
            sources.append(_text(out.get("text", "")))
        elif "text/plain" in data:
            sources.append(_text(data["text/plain"]))
    regex = re.compile(pattern)
    lines: list[str] = []
    for source in sources:
        for line in source.splitlines():
            lines.extend(m.group(0) for m in regex.finditer(line) if m.group(0))
    return lines


def _unquote(text: str) -> str:
    """A string result as print() shows it ('a' -> a), any other text unchanged."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        import ast

        try:
            value = ast.literal_eval(text)
            return value if isinstance(value, str) else text
        except (ValueError, SyntaxError):
            return text
    return text


def _terminal_lines(text: str) -> list[str]:
    # progress bars rewrite their line with "\r": a terminal would show the last state only
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return [line.replace("\t", "    ") for line in lines]


class _TableReader:
    """The header and rows of the first pandas ``<table class="dataframe">`` in some HTML."""

    def __init__(self, text: str) -> None:
        from html.parser import HTMLParser

        reader = self
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.found = False

        class Parser(HTMLParser):
            def __init__(self) -> None:
                super().__init__(convert_charrefs=True)
                self.depth = 0
                self.section = ""
                self.row: list[str] | None = None
                self.cell: list[str] | None = None
                self.header_rows: list[list[str]] = []

            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                if tag == "table":
                    self.depth += 1
                    if self.depth == 1 and not reader.found:
                        reader.found = "dataframe" in (dict(attrs).get("class") or "")
                if self.depth != 1 or not reader.found:
                    return
                if tag in ("thead", "tbody"):
                    self.section = tag
                elif tag == "tr":
                    self.row = []
                elif tag in ("td", "th") and self.row is not None:
                    self.cell = []

            def handle_endtag(self, tag: str) -> None:
                if tag == "table":
                    self.depth -= 1
                if self.depth != 1 or not reader.found:
                    if tag == "table" and self.depth == 0 and self.header_rows and not reader.header:
                        reader.header = self.header_rows[0]
                    return
                if tag in ("td", "th") and self.cell is not None and self.row is not None:
                    self.row.append(" ".join("".join(self.cell).split()))
                    self.cell = None
                elif tag == "tr" and self.row is not None:
                    (self.header_rows if self.section == "thead" else reader.rows).append(self.row)
                    self.row = None

            def handle_data(self, data: str) -> None:
                if self.cell is not None:
                    self.cell.append(data)

        parser = Parser()
        parser.feed(text)
        parser.close()
        if parser.header_rows and not self.header:
            self.header = parser.header_rows[0]


def _html_table(text: str) -> tuple[list[str], list[list[str]]] | None:
    if 'class="dataframe' not in text:
        return None
    table = _TableReader(text)
    if not table.found or not table.header:
        return None
    header = table.header
    rows = table.rows
    # pandas puts the index first: an empty header cell over row-header cells
    if header and header[0] == "" and all(len(r) == len(header) for r in rows):
        header, rows = header[1:], [r[1:] for r in rows]
    return header, rows


def _kubectl_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Rows as kubectl prints them: upper-case headers, left-aligned columns three spaces apart."""
    cols = [h.upper().replace(" ", "_") for h in header]
    data = [[("<none>" if v in ("", "<NA>", "NaN", "NaT") else v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in data if i < len(r)]) for i, c in enumerate(cols)]
    out = []
    for r in [cols, *data]:
        cells = [f"{v:<{widths[i]}}" for i, v in enumerate(r[:len(cols)])]
        out.append("   ".join(cells).rstrip())
    return out


def _png_title(data: bytes) -> str:
    """The ``Title`` (or ``Description``) text chunk matplotlib writes with ``savefig(metadata=...)``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            info = dict(image.info)
    except (UnidentifiedImageError, OSError, ValueError):
        return ""
    return str(info.get("Title") or info.get("Description") or "")


# ------------------------------------------------------------------------------------------------ the rules

_FRONT_KEYS = ("title", "overview", "weight", "owner", "test")
_SHORTCODE = re.compile(r"^( *)\{\{<\s*(/?)(\w+)")


def hugo_problems(text: str, *, images: set[str] | None = None, page_dir: str | os.PathLike[str] | None = None,
                  ) -> list[str]:
    """Every way ``text`` (an index.md) breaks the istio.io page rules; an empty list when it follows them.

    The rules: front matter with title, overview, weight, owner and test; ordered list items written ``1.`` and
    two spaces; every line inside a ``{{< text >}}`` block indented like its opening line, that indentation a
    multiple of 4; in bash blocks, a first line starting with ``$ ``; image captions present and not ending
    with a period; each image's ``link`` file present beside the page (in ``images`` or ``page_dir``).
    """
    problems: list[str] = []
    lines = text.splitlines()
    if not lines or lines[0] != "---" or "---" not in lines[1:]:
        return ["the page does not start with front matter between '---' lines"]
    end = lines.index("---", 1)
    try:
        front = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as exc:
        return [f"the front matter is not YAML: {exc}"]
    if not isinstance(front, dict):
        return [f"the front matter is not a mapping of keys to values: {front!r}"]
    # YAML 1.1 reads istio.io's `test: no` as false and `test: yes` as true
    keys = {str(k): ({True: "yes", False: "no"}[v] if isinstance(v, bool) else ("" if v is None else str(v)))
            for k, v in front.items()}
    problems += [f"front matter has no {k!r}" for k in _FRONT_KEYS if not keys.get(k)]
    if keys.get("owner") and keys["owner"] != HUGO_OWNER:
        problems.append(f"owner is {keys['owner']!r}, not {HUGO_OWNER}")
    if keys.get("test") and keys["test"] not in ("yes", "no", "n/a"):
        problems.append(f"test is {keys['test']!r}; istio.io accepts yes, no or n/a")
    if keys.get("weight") and not isinstance(front.get("weight"), int):
        problems.append(f"weight {keys['weight']!r} is not a number")
    body = lines[end + 1:]
    in_text: tuple[int, str, int] | None = None  # (indent, syntax, line number)
    first_in_block = False
    image_open: tuple[int, list[str]] | None = None
    for n, line in enumerate(body, start=end + 2):
        short = _SHORTCODE.match(line)
        if in_text is not None:
            if short and short.group(2) == "/" and short.group(3) == "text":
                if len(short.group(1)) != in_text[0]:
                    problems.append(f"line {n}: {{{{< /text >}}}} indented {len(short.group(1))}, its opening "
                                    f"{in_text[0]}")
                in_text = None
                continue
            if line.strip() and not line.startswith(" " * in_text[0]):
                problems.append(f"line {n}: a line in the text block is indented less than its shortcode")
            if first_in_block and in_text[1] == "bash" and not line[in_text[0]:].startswith("$ "):
                problems.append(f"line {n}: a bash text block must start with a '$ ' command line")
            first_in_block = False
            continue
        if image_open is not None:
            image_open[1].append(line)
            if ">}}" in line:
                problems += _image_problems(image_open[0], " ".join(image_open[1]), images, page_dir)
                image_open = None
            continue
        if short and short.group(3) == "text" and not short.group(2):
            indent = len(short.group(1))
            if indent % 4:
                problems.append(f"line {n}: text shortcode indented {indent} spaces, not a multiple of 4")
            syntax = re.search(r'\{\{<\s*text\s+(?:syntax=")?(\w+)', line)
            in_text = (indent, syntax.group(1) if syntax else "", n)
            first_in_block = True
            continue
        if short and short.group(3) == "image":
            image_open = (n, [line])
            if ">}}" in line:
                problems += _image_problems(n, line, images, page_dir)
                image_open = None
            continue
        ordered = re.match(r"^( *)(\d+)([.)])( +)\S", line)
        if ordered:
            if ordered.group(2) != "1" or ordered.group(3) != "." or ordered.group(4) != "  ":
                problems.append(f"line {n}: ordered list items are written '1.' and two spaces: {line.strip()!r}")
            if len(ordered.group(1)) % 4:
                problems.append(f"line {n}: a nested list item indented {len(ordered.group(1))} spaces, not a "
                                "multiple of 4")
    if in_text is not None:
        problems.append(f"line {in_text[2]}: a text block is never closed")
    if image_open is not None:
        problems.append(f"line {image_open[0]}: an image shortcode is never closed")
    return problems


def _image_problems(n: int, text: str, images: set[str] | None, page_dir: str | os.PathLike[str] | None,
                    ) -> list[str]:
    problems = []
    caption = re.search(r'caption="([^"]*)"', text)
    link = re.search(r'link="([^"]*)"', text)
    if not caption or not caption.group(1).strip():
        problems.append(f"line {n}: an image without a caption")
    elif caption.group(1).rstrip().endswith("."):
        problems.append(f"line {n}: the caption {caption.group(1)!r} ends with a period (istio.io's MARKDOWN ERROR)")
    if not link:
        problems.append(f"line {n}: an image without link=")
    elif images is not None or page_dir is not None:
        name = link.group(1)
        here = (images is not None and name in images) or (page_dir is not None and (Path(page_dir) / name).is_file())
        if not here:
            problems.append(f"line {n}: the image {name!r} is not beside the page")
    return problems
