/*
 * medattn3d explain viewer: connects the explain index page to NiiVue (niivue.umd.js, loaded before this file).
 *
 * The page works from disk (file://) with no server: browsers refuse fetch() of local files there, so each case's
 * volumes arrive as a <script> (viewer/<case>.js) that calls medattn3dViewer.addCase({...}) with gzipped NIfTI
 * layers in base64. This file reads the page's configuration (#mv-config), loads a case when it is picked, and
 * wires the controls: case, plane, overlay visibility and opacity. The page reports its state for tests and
 * people alike in #viewer's data-viewer attribute ("loading", "ready", "no-webgl", "error").
 */
(function () {
  "use strict";

  // Class colours (index 0, the background, stays transparent); repeats beyond its length.
  const PALETTE = [
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
  ];
  const PLANES = { multiplanar: "MULTIPLANAR", axial: "AXIAL", coronal: "CORONAL", sagittal: "SAGITTAL" };

  const state = { nv: null, config: null, cases: {}, waiting: {}, current: null };

  function section() {
    return document.getElementById("viewer");
  }

  function setStatus(text, phase) {
    const status = document.getElementById("mv-status");
    if (status) status.textContent = text;
    if (phase) section().dataset.viewer = phase;
  }

  function labelColormap(classes) {
    const highest = Math.max(1, ...Object.keys(classes).map(Number).filter(Number.isFinite));
    const map = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [classes["0"] || "background"] };
    for (let k = 1; k <= highest; k++) {
      const [r, g, b] = PALETTE[(k - 1) % PALETTE.length];
      map.R.push(r); map.G.push(g); map.B.push(b); map.A.push(255); map.I.push(k);
      map.labels.push(classes[String(k)] || "class " + k);
    }
    return map;
  }

  // One swatch per class, in the colours of the label overlays.
  function fillLegend(colours) {
    const legend = document.getElementById("mv-legend");
    if (!legend) return;
    legend.textContent = "";
    for (let k = 1; k < colours.labels.length; k++) {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "mv-swatch";
      swatch.style.background = "rgb(" + colours.R[k] + "," + colours.G[k] + "," + colours.B[k] + ")";
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(" " + k + " " + colours.labels[k]));
      legend.appendChild(item);
    }
  }

  function loadCaseScript(info) {
    if (state.cases[info.name]) return Promise.resolve(state.cases[info.name]);
    return new Promise(function (resolve, reject) {
      state.waiting[info.name] = resolve;
      const script = document.createElement("script");
      script.src = info.script.split("/").map(encodeURIComponent).join("/");
      script.onerror = function () { reject(new Error(info.script + " could not be read")); };
      document.body.appendChild(script);
    });
  }

  function layerOptions(layer) {
    if (layer.kind === "scan") return { colormap: "gray", cal_min: 0, cal_max: 255, opacity: 1 };
    if (layer.kind === "attention") return { colormap: "inferno", cal_min: 0, cal_max: 1, opacity: 0 };
    return { colormap: "gray", opacity: 0 };
  }

  function overlayRows() {
    return Array.from(document.querySelectorAll("#mv-overlays li[data-overlay]"));
  }

  // Opacity of every overlay from its row (hidden rows and unticked overlays: 0).
  function applyOverlays() {
    const entry = state.current;
    if (!entry) return;
    const names = entry.layers.map(function (layer) { return layer.name; });
    for (const row of overlayRows()) {
      const index = names.indexOf(row.dataset.overlay);
      row.hidden = index < 0;
      if (index < 0) continue;
      const shown = row.querySelector(".mv-show").checked;
      const opacity = Number(row.querySelector(".mv-opacity").value) / 100;
      state.nv.setOpacity(index, shown ? opacity : 0);
    }
    state.nv.updateGLVolume();
  }

  async function showCase(name) {
    const info = state.config.cases.find(function (c) { return c.name === name; });
    setStatus("loading " + name, "loading");
    const entry = await loadCaseScript(info);
    const volumes = await Promise.all(entry.layers.map(function (layer) {
      const options = layerOptions(layer);
      options.base64 = layer.base64;
      options.name = layer.name + ".nii.gz";
      return niivue.NVImage.loadFromBase64(options);
    }));
    const colours = labelColormap(state.config.classes || {});
    entry.layers.forEach(function (layer, i) {
      if (layer.kind === "labels") volumes[i].setColormapLabel(colours);
    });
    while (state.nv.volumes.length > 0) state.nv.removeVolume(state.nv.volumes[state.nv.volumes.length - 1]);
    for (const volume of volumes) state.nv.addVolume(volume);
    state.current = entry;
    applyOverlays();
    const reduced = entry.factor > 1 ? ", reduced " + entry.factor + "x per axis" : "";
    setStatus(name + ": " + entry.shape.join(" x ") + " voxels" + reduced, "ready");
    section().dataset.volumes = String(state.nv.volumes.length);
    section().dataset.case = name;
    const box = document.getElementById("mv-canvas").getBoundingClientRect();
    section().dataset.canvas = [box.left, box.top, box.width, box.height].map(Math.round).join(",");
  }

  function fail(error) {
    setStatus("viewer failed: " + (error && error.message ? error.message : error), "error");
  }

  async function start() {
    if (!section()) return;
    state.config = JSON.parse(document.getElementById("mv-config").textContent);
    const canvas = document.getElementById("mv-canvas");
    const probe = document.createElement("canvas").getContext("webgl2");
    if (!probe || typeof niivue === "undefined") {
      setStatus("this browser offers no WebGL2 here: use the montages and NIfTI files below", "no-webgl");
      return;
    }
    state.nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1],
      isRadiologicalConvention: true,
      show3Dcrosshair: true,
      crosshairWidth: 1,
      crosshairColor: [0.2, 0.9, 0.2, 0.8],
      loadingText: "loading",
    });
    await state.nv.attachToCanvas(canvas);
    fillLegend(labelColormap(state.config.classes || {}));
    state.nv.setSliceType(niivue.SLICE_TYPE.MULTIPLANAR);
    state.nv.onLocationChange = function (data) {
      const where = document.getElementById("mv-location");
      if (where && data && data.string) where.textContent = data.string;
    };
    document.getElementById("mv-case").addEventListener("change", function (event) {
      showCase(event.target.value).catch(fail);
    });
    document.getElementById("mv-plane").addEventListener("change", function (event) {
      state.nv.setSliceType(niivue.SLICE_TYPE[PLANES[event.target.value]]);
    });
    for (const row of overlayRows()) {
      row.querySelector(".mv-show").addEventListener("change", applyOverlays);
      row.querySelector(".mv-opacity").addEventListener("input", function () {
        row.querySelector(".mv-show").checked = true;
        applyOverlays();
      });
    }
    await showCase(state.config.cases[0].name);
  }

  window.medattn3dViewer = {
    // Called by each viewer/<case>.js file when the browser has read it.
    addCase: function (entry) {
      state.cases[entry.name] = entry;
      const resolve = state.waiting[entry.name];
      delete state.waiting[entry.name];
      if (resolve) resolve(entry);
    },
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { start().catch(fail); });
  } else {
    start().catch(fail);
  }
})();
