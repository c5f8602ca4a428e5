"""The explain index: one HTML page that opens from disk (``file://``, no server) with an interactive viewer
(NiiVue: scan, prediction, truth and every attention map as overlays, three planes) above a table of every case's
montage, files and inside/outside ratios."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from medattn3d.outputs.atomic import atomic_write_text

LABEL_LAYERS = ("prediction", "truth")


def _script_json(value: Any) -> str:
    """JSON that can sit inside a ``<script>`` element (no ``</script>`` or ``<!--`` can appear in it)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _overlay_rows(overlays: list[str], shown: str) -> str:
    rows = []
    for name in overlays:
        checked = " checked" if name == shown else ""
        opacity = 50 if name not in LABEL_LAYERS else 40
        rows.append(
            f'<li data-overlay="{html.escape(name)}"><label><input type="checkbox" class="mv-show"{checked}> '
            f"{html.escape(name)}</label> "
            f'<input type="range" class="mv-opacity" min="0" max="100" value="{opacity}" '
            f'aria-label="opacity of {html.escape(name)}"></li>'
        )
    return "\n".join(rows)


def _viewer_section(viewer_cases: list[dict[str, Any]], overlays: list[str], shown: str, classes: dict) -> str:
    options = "".join(f"<option>{html.escape(c['name'])}</option>" for c in viewer_cases)
    reduced = [c for c in viewer_cases if c["factor"] > 1]
    note = ""
    if reduced:
        factors = sorted({c["factor"] for c in reduced})
        note = (
            f"<p class='mv-note'>{len(reduced)} case(s) are shown reduced by {'/'.join(map(str, factors))} per axis "
            "to keep the page light (mean over each block; labels: the highest in each block); the NIfTI files "
            "below are full resolution.</p>"
        )
    config = {"cases": viewer_cases, "overlays": overlays, "shown": shown, "classes": classes}
    return f"""<section id="viewer" data-viewer="loading">
<h2>Explore</h2>
<div class="mv-controls">
<label>case <select id="mv-case">{options}</select></label>
<label>view <select id="mv-plane">
<option value="multiplanar">three planes</option><option value="axial">axial</option>
<option value="coronal">coronal</option><option value="sagittal">sagittal</option>
</select></label>
<span id="mv-status" role="status">loading viewer</span>
</div>
<div class="mv-body">
<div class="mv-canvas-box"><canvas id="mv-canvas"></canvas></div>
<div class="mv-side">
<h3>Overlays</h3>
<ul id="mv-overlays">
{_overlay_rows(overlays, shown)}
</ul>
<p class="mv-help">Scroll (or drag) in a plane to move through its slices; click to move the crosshair; the
location and the values under it appear below the image. Tick an overlay to show it, slide to change its opacity.
Attention: dark near 0 (suppressed), bright near 1 (passed). Prediction and truth use one colour per class.</p>
<ul id="mv-legend" aria-label="class colours"></ul>
<p id="mv-location"></p>
</div>
</div>
{note}
<script id="mv-config" type="application/json">{_script_json(config)}</script>
<noscript>The viewer needs JavaScript; the montages below do not.</noscript>
</section>"""


def write_index(
    output_dir: Path,
    cases: list[dict[str, Any]],
    names: list[str],
    viewer_cases: list[dict[str, Any]] | None = None,
    shown: str | None = None,
    class_names: dict[str, str] | None = None,
) -> Path:
    """Write ``index.html``: the viewer (when ``viewer_cases`` holds the entries ``viewer.write_case_layers``
    returned and the assets are in ``viewer/``) and every case's montage, files and attention ratios."""
    rows = []
    for case in cases:
        ratios = "".join(f"<td>{case['ratios'].get(n, float('nan')):.2f}</td>" for n in names)
        links = " ".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in case["files"])
        rows.append(
            f"<tr><td><b>{html.escape(case['name'])}</b><br><small>{links}</small></td>"
            f'<td><a href="{html.escape(case["montage"])}"><img src="{html.escape(case["montage"])}" width="360" '
            f'alt="montage of {html.escape(case["name"])}"></a></td>{ratios}</tr>'
        )
    header = "".join(f"<th>inside/outside<br>{html.escape(n)}</th>" for n in names)
    viewer = ""
    scripts = ""
    if viewer_cases:
        has_truth = any("truth" in c["layers"] for c in viewer_cases)
        overlays = ["prediction", *(["truth"] if has_truth else []), *names]
        viewer = _viewer_section(viewer_cases, overlays, shown or names[0], class_names or {})
        scripts = '<script src="viewer/niivue.umd.js"></script>\n<script src="viewer/explain_viewer.js"></script>'
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medattn3d attention maps</title>
<link rel="stylesheet" href="viewer/explain_viewer.css">
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border-bottom:1px solid #ddd;padding:6px;vertical-align:top}}
table{{border-collapse:collapse}}</style></head>
<body><h1>Attention maps</h1>
{viewer}
<h2>Cases</h2>
<p>{len(cases)} case(s). Each montage shows axial, coronal and sagittal slices through the predicted structures:
the scan, the predicted contours (ground truth dashed when given) and the attention heat map (0 to 1). The ratio
columns give the mean attention inside the target structures divided by the mean outside.</p>
<table><tr><th>case</th><th>montage</th>{header}</tr>
{"".join(rows)}
</table>
{scripts}
<script>
// mark images that fail to load, and count the ones that did (read by the browser test)
window.addEventListener("load", () => {{
  let loaded = 0;
  for (const img of document.images) {{
    if (img.complete && img.naturalWidth > 0) {{ loaded += 1; }}
    else {{ img.insertAdjacentHTML("afterend", "<b class='missing'>missing image</b>"); }}
  }}
  document.body.dataset.imagesLoaded = String(loaded);
}});
</script></body></html>
"""
    return atomic_write_text(output_dir / "index.html", page)
