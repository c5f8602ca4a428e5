"""The explain index in a real browser (headless Chromium, software WebGL, opened from file:// with no server):
the viewer loads the case, draws the volume (the canvas area of a screenshot is not blank) and lists every
overlay; the montages load. Skipped when Chromium is not installed."""

import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest
from monai.inferers import SlidingWindowInferer

from medattn3d.data import ct_transforms
from medattn3d.explain import AttentionExplainer
from medattn3d.networks import AttentionUNet
from tests.helpers import blob_mask, oblique_affine, save_nifti

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")


def _browser(tmp_path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--use-angle=swiftshader",  # WebGL2 in software: NiiVue needs it, the machine has no GPU
        "--enable-unsafe-swiftshader",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=20000",
        "--window-size=1200,900",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)


def test_viewer_draws_the_volume_and_lists_every_overlay(tmp_path):
    shape = (40, 36, 20)
    rng = np.random.default_rng(0)
    image = save_nifti(rng.normal(0, 200, shape).astype(np.float32), oblique_affine(), tmp_path / "ct.nii.gz")
    label = save_nifti(blob_mask(shape), oblique_affine(), tmp_path / "ct_label.nii.gz")
    pixdim = (1.5, 1.5, 2.0)
    AttentionExplainer(
        AttentionUNet(3, 1, 3, channels=(4, 8, 16, 32), strides=(2, 2, 2)).eval(),
        ct_transforms("infer", pixdim=pixdim),
        SlidingWindowInferer((32, 32, 16), sw_batch_size=2, overlap=0.25),
        tmp_path / "o",
        label_preprocessing=ct_transforms("val", pixdim=pixdim),
    ).run([str(image)], [str(label)])
    page = (tmp_path / "o" / "index.html").as_uri()

    dom = _browser(tmp_path, "--dump-dom", page).stdout
    section = re.search(r'<section id="viewer"[^>]*>', dom)
    assert section is not None, dom[-2000:]
    assert 'data-viewer="ready"' in section.group(0), section.group(0)
    assert 'data-volumes="5"' in section.group(0)  # scan, prediction, truth, two gate levels
    rows = re.findall(r'<li data-overlay="([^"]+)"([^>]*)>', dom)
    assert [name for name, _ in rows] == ["prediction", "truth", "gate_level1", "gate_level2"]
    assert all("hidden" not in attributes for _, attributes in rows)  # every overlay exists for this case
    assert dom.count('class="mv-swatch"') == 2  # legend: classes 1 and 2 of the three-class network
    assert 'data-images-loaded="1"' in dom and "missing image" not in dom.split("<script")[0]

    left, top, width, height = map(int, re.search(r'data-canvas="([\d,]+)"', section.group(0)).group(1).split(","))
    assert width > 300 and height > 300
    shot = tmp_path / "shot.png"
    _browser(tmp_path, f"--screenshot={shot}", page)
    canvas = matplotlib.image.imread(str(shot))[top + 2 : top + height - 2, left + 2 : left + width - 2, :3]
    colours = np.unique((canvas * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    crosshair = (canvas[..., 1] > canvas[..., 0] + 0.3) & (canvas[..., 1] > canvas[..., 2] + 0.3)
    drawn = (canvas.max(axis=-1) > 0.05) & ~crosshair
    # the noisy scan under the attention overlay fills the three planes: a blank canvas (black, the crosshair and
    # the orientation letters only) measured std 0.11, 75 colours, 0.03 % drawn; this page 0.24, ~7000, 54 %
    assert canvas.std() > 0.05 and len(colours) > 1000 and drawn.mean() > 0.2
