// Glimpse page: plain JavaScript against the explain API (no build step).
"use strict";

// The class-attribution methods (compared side by side) and every method of the selector.
const METHODS = [
  "gradcam", "occlusion", "vanilla_gradients", "gradients_inputs", "smoothgrad", "integrated_gradients",
  "gradcam_pp", "hirescam", "layercam",
];
const ACTIVATIONS = "activations";
const ALL_METHODS = [...METHODS, ACTIVATIONS];
const KEY_STORAGE = "glimpse-api-key";

const $ = (id) => document.getElementById(id);
const state = { file: null, model: null, methods: [], pending: 0, retry: null };

function authHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
  if (response.status === 401) {
    $("auth").hidden = false;
    $("api-key").focus();
  }
  if (!response.ok) {
    let code = String(response.status);
    let message = response.statusText;
    try {
      const body = await response.json();
      code = body.error.code;
      message = body.error.message;
    } catch (_) {
      /* not the JSON error shape */
    }
    throw new ApiError(response.status, code, message);
  }
  return response;
}

function busy(delta, text) {
  state.pending += delta;
  $("status").textContent = state.pending > 0 ? text || "Working..." : "";
  document.body.classList.toggle("busy", state.pending > 0);
}

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = error.code ? `${error.code}: ${error.message}` : String(error.message || error);
}

function modelPath(suffix = "") {
  return `/v1/models/${encodeURIComponent(state.model)}${suffix}`;
}

async function loadModels() {
  showError(null);
  try {
    const list = await (await api("/v1/models")).json();
    const select = $("model");
    select.replaceChildren();
    for (const m of list.models) {
      const option = new Option(m.name + (m.default ? " (default)" : ""), m.name, m.default, m.default);
      select.add(option);
    }
    if (!list.models.length) {
      showError({ message: "No model configured: start the API with --default-model NAME." });
      return;
    }
    state.model = select.value;
    await loadModel();
  } catch (error) {
    state.retry = loadModels;
    showError(error);
  }
}

async function loadModel() {
  const info = await (await api(modelPath())).json();
  state.methods = info.methods;
  const select = $("method");
  const previous = select.value || info.default_method || "";
  select.replaceChildren();
  for (const method of ALL_METHODS) {
    const available = info.methods.includes(method);
    const option = new Option(method + (available ? "" : " (not available)"), method);
    option.disabled = !available;
    select.add(option);
  }
  select.value = info.methods.includes(previous) ? previous : info.default_method || info.methods[0] || "";
  showMethodFields();
  const size = info.input ? `${info.input.width}x${info.input.height}` : "?";
  $("model-info").textContent = `version ${info.version}, input ${size}, ${info.labels.length} labels`;
  $("compare").disabled = !state.file;
}

function showMethodFields() {
  const activations = $("method").value === ACTIVATIONS;
  $("layer-field").hidden = !activations;
  $("download-grid").textContent = activations
    ? "Download original | channel grid PNG"
    : "Download original | heatmap | overlay PNG";
}

function imageForm(method, extra = {}) {
  const form = new FormData();
  form.append("image", state.file, state.file.name || "image");
  if (method) form.append("method", method);
  if (method === ACTIVATIONS) form.append("layer", $("layer").value || "-1");
  for (const [k, v] of Object.entries(extra)) form.append(k, String(v));
  return form;
}

function renderPredictions(predictions) {
  const list = $("predictions");
  list.replaceChildren();
  for (const p of predictions) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = p.label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, Math.round(p.score * 100))}%`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${(p.score * 100).toFixed(1)}%`;
    item.append(name, bar, score);
    list.append(item);
  }
}

async function explainCurrent() {
  if (!state.file || !state.model) return;
  const method = $("method").value;
  const colormap = $("colormap").value;
  showError(null);
  busy(+1, `Explaining with ${method}...`);
  try {
    const [prediction, explanation] = await Promise.all([
      api(modelPath(":predict"), { method: "POST", body: imageForm(null, { top_k: 5 }) }).then((r) => r.json()),
      api(modelPath(":explain"), {
        method: "POST",
        body: imageForm(method, { heatmap_size: 8, colormap, top_k: 5 }),
      }).then((r) => r.json()),
    ]);
    renderPredictions(prediction.results[0].predictions);
    const result = explanation.results[0];
    const model = `model ${explanation.model.name} v${explanation.model.version}`;
    const link = $("download-overlay");
    const img = $("overlay").querySelector("img");
    let url;
    if (method === ACTIVATIONS) {
      // the channels of one layer, tiled: no class involved, the prediction is only reported
      const acts = result.activations;
      url = `data:image/png;base64,${result.grid_png}`;
      img.alt = "activation grid";
      img.classList.add("pixelated");
      $("overlay").querySelector("figcaption").textContent =
        `${method} of layer ${acts.layer} "${acts.layer_name}" (${acts.channels.shape.join("x")}, ` +
        `${acts.grid.tiles.join("x")} tiles), predicted "${result.target.label}", ${model}`;
      link.textContent = "Download channel grid PNG";
      link.download = `${state.model}-${method}-${acts.layer_name}.png`;
    } else {
      url = `data:image/jpeg;base64,${result.overlay_jpeg}`;
      img.alt = "explanation overlay";
      img.classList.remove("pixelated");
      $("overlay").querySelector("figcaption").textContent =
        `${method} for "${result.target.label}" (${(result.target.score * 100).toFixed(1)}%), ${model}`;
      link.textContent = "Download overlay JPEG";
      link.download = `${state.model}-${method}-overlay.jpg`;
    }
    img.src = url;
    $("overlay-title").textContent = `Explanation: ${method}`;
    link.href = url;
    $("result").hidden = false;
  } catch (error) {
    showError(error);
  } finally {
    busy(-1);
  }
}

async function downloadGrid(event) {
  event.preventDefault();
  if (!state.file) return;
  const method = $("method").value;
  busy(+1, "Rendering grid...");
  try {
    const form = imageForm(method, { format: "grid", colormap: $("colormap").value });
    const blob = await (await api(modelPath(":explain"), { method: "POST", body: form })).blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `${state.model}-${method}-grid.png`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    showError(error);
  } finally {
    busy(-1);
  }
}

async function compareAll() {
  if (!state.file) return;
  const grid = $("compare-grid");
  grid.replaceChildren();
  showError(null);
  busy(+1, "Comparing every method...");
  try {
    for (const method of METHODS) {
      const card = document.createElement("figure");
      card.className = "card";
      card.dataset.method = method;
      const caption = document.createElement("figcaption");
      caption.textContent = method;
      card.append(caption);
      grid.append(card);
      try {
        const body = imageForm(method, { heatmap_size: 4, colormap: $("colormap").value, top_k: 1 });
        const explanation = await (await api(modelPath(":explain"), { method: "POST", body })).json();
        const result = explanation.results[0];
        const img = document.createElement("img");
        img.alt = `${method} overlay`;
        img.src = `data:image/jpeg;base64,${result.overlay_jpeg}`;
        const link = document.createElement("a");
        link.href = img.src;
        link.download = `${state.model}-${method}-overlay.jpg`;
        link.textContent = "Download JPEG";
        caption.textContent = `${method}: ${result.target.label}`;
        card.prepend(img);
        card.append(link);
        card.classList.add("ok");
      } catch (error) {
        const note = document.createElement("p");
        note.className = "error";
        note.textContent = error.message;
        card.append(note);
        card.classList.add("failed");
      }
    }
  } finally {
    busy(-1);
  }
}

function chooseFile(file) {
  if (!file) return;
  state.file = file;
  $("compare").disabled = !state.model;
  $("compare-grid").replaceChildren();
  explainCurrent();
}

function init() {
  $("file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    chooseFile(e.dataTransfer.files[0]);
  });
  $("model").addEventListener("change", async (e) => {
    state.model = e.target.value;
    try {
      await loadModel();
      await explainCurrent();
    } catch (error) {
      showError(error);
    }
  });
  $("method").addEventListener("change", () => {
    showMethodFields();
    explainCurrent();
  });
  $("layer").addEventListener("change", explainCurrent);
  $("colormap").addEventListener("change", explainCurrent);
  $("compare").addEventListener("click", compareAll);
  $("download-grid").addEventListener("click", downloadGrid);
  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    $("auth").hidden = true;
    (state.retry || loadModels)();
  });
  loadModels();
}

document.addEventListener("DOMContentLoaded", init);
