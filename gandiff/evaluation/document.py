"""The report document: headings, prose, tables and PNGs, rendered to one self-contained HTML file and to
Markdown with the PNGs beside it; and the checks that every embedded image decodes (and renders in Chromium).

Images are PNGs embedded as base64 ``data:`` URIs, so the HTML is one file that opens anywhere (and in a W&B
artifact); the Markdown version links the same PNGs written beside it.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any



@dataclass
class Report:
    """Sections of HTML fragments and named PNGs; rendered to one HTML file and to Markdown + PNG files."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)  # ("h2", text) | ("p", text) | ("table", rows) | ("img", (name, png, caption))

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        if rows:
            self.blocks.append(("table", (list(columns or _columns(rows)), list(rows))))

    def image(self, name: str, png: bytes, caption: str = "") -> None:
        self.blocks.append(("img", (name, png, caption)))

    @property
    def images(self) -> list[tuple[str, bytes, str]]:
        return [b[1] for b in self.blocks if b[0] == "img"]

    def to_html(self) -> str:
        out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
               f"<title>{html.escape(self.title)}</title>", f"<style>{_CSS}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for kind, val in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{html.escape(val)}</h2>")
            elif kind == "p":
                out.append(f"<p>{html.escape(val)}</p>")
            elif kind == "table":
                cols, rows = val
                out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
                for r in rows:
                    out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>")
                out.append("</table>")
            elif kind == "img":
                name, png, caption = val
                data = base64.b64encode(png).decode("ascii")
                out.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    def to_markdown(self, asset_dir: str = "assets") -> str:
        out = [f"# {self.title}", ""]
        for kind, val in self.blocks:
            if kind == "h2":
                out += [f"## {val}", ""]
            elif kind == "p":
                out += [val, ""]
            elif kind == "table":
                cols, rows = val
                out.append("| " + " | ".join(cols) + " |")
                out.append("|" + "---|" * len(cols))
                out += ["| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in cols) + " |" for r in rows]
                out.append("")
            elif kind == "img":
                name, _, caption = val
                out += [f"![{caption or name}]({asset_dir}/{name}.png)", ""]
        return "\n".join(out)

    def write(self, folder: str | os.PathLike, stem: str = "report") -> dict[str, Path]:
        """``<stem>.html`` (self-contained), ``<stem>.md`` and ``assets/<name>.png``, atomically."""
        from gandiff.artifacts import atomic_write_bytes, atomic_write_text

        folder = Path(folder)
        files = {"html": atomic_write_text(folder / f"{stem}.html", self.to_html()),
                 "md": atomic_write_text(folder / f"{stem}.md", self.to_markdown())}
        for name, png, _ in self.images:
            files[name] = atomic_write_bytes(folder / "assets" / f"{name}.png", png)
        return files


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}"
        "th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:12px;color:#555}"
        "h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}")


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) if isinstance(v, dict) else ", ".join(map(_fmt, v))
    return str(v)


def html_images_ok(text: str) -> tuple[int, list[str]]:
    """(number of <img> tags, problems): every image must be an embedded PNG that decodes."""
    from PIL import Image

    problems = []
    srcs = re.findall(r"<img[^>]*\ssrc='([^']*)'", text)
    for i, src in enumerate(srcs):
        if not src.startswith("data:image/png;base64,"):
            problems.append(f"image {i}: not an embedded PNG ({src[:40]})")
            continue
        try:
            with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as im:
                im.load()
                if im.width < 2 or im.height < 2:
                    problems.append(f"image {i}: {im.width}x{im.height}")
        except Exception as e:
            problems.append(f"image {i}: does not decode ({e})")
    return len(srcs), problems



def browser_check(html_path: str | os.PathLike, chromium: str = "chromium", timeout: float = 60.0) -> tuple[int, int]:
    """Open the report in headless Chromium; return (images that loaded with a size, images on the page).

    A copy of the page gets a script that, after ``load``, writes the count of ``<img>`` with
    ``naturalWidth > 0`` into the DOM, which ``--dump-dom`` prints.
    """
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which(chromium)
    if exe is None:
        raise FileNotFoundError(f"{chromium}: not installed (apt-get install -y chromium)")
    text = Path(html_path).read_text(encoding="utf-8")
    probe = ("<script>window.addEventListener('load',function(){var im=document.images,n=0;"
             "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)n++;}"
             "var d=document.createElement('div');d.id='gandiff-check';d.textContent=n+'/'+im.length;"
             "document.body.appendChild(d);});</script>")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    m = re.search(r"id=\"gandiff-check\">(\d+)/(\d+)<", res.stdout)
    if not m:
        raise RuntimeError(f"chromium did not render the page (exit {res.returncode}): {res.stderr[-500:]}")
    return int(m.group(1)), int(m.group(2))
