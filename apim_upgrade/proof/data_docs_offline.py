"""Data Docs that render with no network: local assets, tables written into the HTML.

GX's page templates load jQuery, Bootstrap, Font Awesome, bootstrap-table and more
from CDNs, and its configuration has no switch for local copies (custom views only
add templates, never replace them). After each build, ``make_offline`` therefore

- copies jQuery (XStatic-jQuery), Bootstrap 4 with Popper (XStatic-Bootstrap, the
  bundle) and Font Awesome Free (fontawesomefree, the official package) into
  ``static/vendor/`` of the site, and points every page at them by relative path;
- drops what is not needed once the tables are plain HTML: bootstrap-table and its
  filter/datepicker extensions (no PyPI package ships them), Vega (only GX's
  distribution charts use it; no gate here draws one) and the dark-mode stylesheet;
- writes the rows of the tables GX fills from JavaScript (the index's validation
  results and suites) into the page as HTML: sorted as GX sorts them, every row
  linked to its page, no filter box (it needed bootstrap-table);
- points GX's logo at its copy in ``static/images/`` instead of a web bucket, and every
  ``static/`` link at the right depth (GX's favicon link on result pages is one short).

A page with nothing left to change is not rewritten, so a build costs one read per page.
"""

from __future__ import annotations

import ast
import html
import importlib.resources
import re
from pathlib import Path
from typing import Any

from apim_upgrade.runtime.atomic import copy_atomically, copy_tree_atomically, write_atomically

# An asset: where it goes under static/vendor/, where the installed package keeps it.
_VENDOR = Path("static", "vendor")


def _sources() -> dict[str, Path]:
    """Installed asset trees by the folder they get under static/vendor/ (imported lazily)."""
    import xstatic.pkg.bootstrap
    import xstatic.pkg.jquery

    fontawesome = Path(str(importlib.resources.files("fontawesomefree"))) / "static" / "fontawesomefree"
    return {
        "jquery": Path(xstatic.pkg.jquery.BASE_DIR),
        "bootstrap": Path(xstatic.pkg.bootstrap.BASE_DIR),
        "fontawesome": fontawesome,
    }


# What each asset tree contributes (relative to its source) and what pages load from it.
_FILES = {
    "jquery": ["jquery.min.js"],
    "bootstrap": ["css/bootstrap.min.css", "js/bootstrap.bundle.min.js"],
    "fontawesome": ["LICENSE.txt", "css/all.min.css", "webfonts"],
}
_TAGS = {
    "script": '<script src="{prefix}static/vendor/{path}"></script>',
    "style": '<link rel="stylesheet" href="{prefix}static/vendor/{path}"/>',
}
# CDN URL (a substring of it) -> the kind and local path of the tag replacing its tag; None: the tag is dropped.
_CDN: list[tuple[str, tuple[str, str] | None]] = [
    ("/jquery-3", ("script", "jquery/jquery.min.js")),
    ("/bootstrap/4.3.1/js/bootstrap.min.js", ("script", "bootstrap/js/bootstrap.bundle.min.js")),
    ("/bootstrap/4.3.1/css/bootstrap.min.css", ("style", "bootstrap/css/bootstrap.min.css")),
    ("/font-awesome/", ("style", "fontawesome/css/all.min.css")),
    ("/popper.js/", None),  # in Bootstrap's bundle
    ("bootstrap-table@", None),
    ("bootstrap-datepicker", None),
    ("bootstrap-dark", None),
    ("/npm/vega", None),
]
_RESOURCE_TAG = re.compile(
    r'<script\s+src="(https?://[^"]+)"[^>]*>\s*</script>|<link\s+[^>]*href="(https?://[^"]+)"[^>]*>', re.I
)
_GX_IMAGES = re.compile(r"https://great-expectations-web-assets\.s3[^\"')]*")
_GX_STATIC = re.compile(r'\b(src|href)="(?:\.\./)*static/')
_JS_TABLE = re.compile(
    r"<script>\s*\$\('#(?P<id>[\w-]+)'\)\.bootstrapTable\(\s*Object\.assign\(\s*\{\s*"
    r"columns: (?P<columns>\[.*?\]),\n\s*data: (?P<data>\[.*?\]),\n\s*toolbar: '#(?P<toolbar>[\w-]+)'\s*\},\s*"
    r"(?P<options>\{.*?\})\s*\)\s*\);.*?</script>",
    re.S,
)


def make_offline(site: Path) -> int:
    """Make every page of the Data Docs site at ``site`` load only local files; return how many changed."""
    if not (site / "index.html").is_file():
        return 0
    _install_assets(site)
    changed = 0
    for page in sorted(site.rglob("*.html")):
        if page.is_relative_to(site / "static"):
            continue
        text = page.read_text(encoding="utf-8")
        offline = offline_page(text, "../" * (len(page.relative_to(site).parts) - 1))
        if offline != text:
            write_atomically(page, offline)  # a reader never sees half a page
            changed += 1
    return changed


def _install_assets(site: Path) -> None:
    for name, source in _sources().items():
        for item in _FILES[name]:
            src, dst = source / item, site / _VENDOR / name / item
            if dst.exists():
                continue
            if src.is_dir():  # whole or absent: a half-copied asset would pass for present above
                copy_tree_atomically(src, dst)
            else:
                copy_atomically(src, dst)


def offline_page(text: str, prefix: str) -> str:
    """One page's HTML with local assets (``prefix``: from the page to the site root) and HTML tables."""

    def local(match: re.Match[str]) -> str:
        url = match[1] or match[2]
        for marker, replacement in _CDN:
            if marker in url:
                return _TAGS[replacement[0]].format(prefix=prefix, path=replacement[1]) if replacement else ""
        return match[0]  # unknown: left as it is (tests/test_offline_pages.py finds it)

    text = _RESOURCE_TAG.sub(local, text)
    text = _GX_IMAGES.sub(f"{prefix}static/images/logo-long.png", text)
    text = _GX_STATIC.sub(rf'\1="{prefix}static/', text)  # GX's favicon link misses a level on result pages
    for match in list(_JS_TABLE.finditer(text)):
        text = _write_table(text, match)
    return text


def _write_table(text: str, match: re.Match[str]) -> str:
    """Put the rows a bootstrapTable(...) call would add into its empty <table>; drop the call and its toolbar."""
    columns: list[dict[str, Any]] = ast.literal_eval(match["columns"])
    rows: list[dict[str, Any]] = ast.literal_eval(match["data"])
    options: dict[str, Any] = ast.literal_eval(match["options"])
    sort_field = options.get("sortName")
    if sort_field:
        key = next((c.get("sortName", sort_field) for c in columns if c.get("field") == sort_field), sort_field)
        rows.sort(key=lambda r: (0, r[key], "") if isinstance(r.get(key), int | float) else (1, 0, str(r.get(key))))
        if options.get("sortOrder") == "desc":
            rows.reverse()
    head = "".join(f"<th>{html.escape(str(c.get('title', '')))}</th>" for c in columns)
    body = "".join(_row(columns, row) for row in rows)
    table_html = f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
    text = text.replace(match[0], "")
    text = re.sub(
        rf'(<table\s+id="{re.escape(match["id"])}"[^>]*>)\s*</table>',
        lambda m: m[1].replace("table-sm", "table table-sm table-hover") + table_html + "</table>",
        text,
        count=1,
    )
    return re.sub(rf'<div id="{re.escape(match["toolbar"])}"[^>]*>.*?</div>', "", text, count=1, flags=re.S)


def _row(columns: list[dict[str, Any]], row: dict[str, Any]) -> str:
    link = row.get("_table_row_link_path")
    cells = []
    for column in columns:
        cell = str(row.get(column.get("field", ""), ""))  # GX's own HTML, as bootstrap-table would insert it
        if link and "<a " not in cell:
            cell = f'<a href="{html.escape(str(link))}" class="text-reset">{cell}</a>'
        align = ' class="text-center"' if column.get("align") == "center" else ""
        cells.append(f"<td{align}>{cell}</td>")
    return f"<tr>{''.join(cells)}</tr>"
