/* smokeseg pages: the live parts. Every change goes through the REST API under /v1 (fetch), so the
 * pages do nothing the API does not. Plain JavaScript, no build step; one init function per page. */
(function () {
  "use strict";
  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const SCORE = /IoU|Dice|loss/;  /* metrics shown with four decimals, 0 included */
  const CHARTS = {
    learning_rate: { keys: ["learning_rate"], zero: true },
    train_loss: { keys: ["train_loss"], smooth: true, logIfWide: true },
    validation_loss: { keys: ["validation_loss"], logIfWide: true },
    validation_IoU: { keys: ["validation_IoU", "validation_Dice"] },
  };

  function esc(value) {
    return String(value == null ? "" : value).replace(/[&<>"']/g, (c) =>
      ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  /** The API's error text: a string detail, or FastAPI's list of {loc, msg}. */
  function detailText(detail) {
    if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("\n");
    return typeof detail === "string" ? detail : JSON.stringify(detail);
  }

  async function api(method, url, body) {
    const init = { method: method, headers: {} };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
    const response = await fetch(url, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
    if (!response.ok) {
      const error = new Error(data && data.detail ? detailText(data.detail) : `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function number(value, digits) {
    if (value == null || value === "" || Number.isNaN(+value)) return "–";
    if (typeof value === "boolean") return String(value);
    return Number.isInteger(+value) && digits === undefined ? String(value) : (+value).toFixed(digits === undefined ? 4 : digits);
  }

  /* Readable names for metrics.json keys, the one place the pages name a metric; the raw key stays in the
   * row's title. A compare key "fold0.validation_IoU" reads "fold 0 · Validation IoU". */
  const METRIC_SPLITS = { validation: "Validation", test: "Test", train: "Train" };
  const METRIC_NAMES = {
    mean_image_IoU: "IoU, mean per image", mean_image_Dice: "Dice, mean per image", image_AUROC: "image AUROC",
    region_recall: "region recall (smoke frames found)", false_region_frames: "share of frames with a false region",
    false_regions_per_frame: "false regions per frame", observations: "images", wall_time_s: "wall time",
    training_time_s: "training time (without the final scoring)",
  };
  function metricLabel(key) {
    const fold = /^fold(\d+)\.(.+)$/.exec(key);
    if (fold) return `fold ${fold[1]} · ${metricLabel(fold[2])}`;
    const split = /^(validation|test|train)_(.+)$/.exec(key);
    const name = METRIC_NAMES[split ? split[2] : key] || (split ? split[2] : key).replace(/_/g, " ");
    return split ? `${METRIC_SPLITS[split[1]]} ${name}` : name.charAt(0).toUpperCase() + name.slice(1);
  }

  function duration(seconds) {
    if (seconds == null || !isFinite(seconds)) return "–";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const minutes = Math.floor(seconds / 60), secs = Math.round(seconds % 60);
    if (minutes < 60) return `${minutes} min ${String(secs).padStart(2, "0")} s`;
    return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
  }

  /** metrics.json holds one object per fold ("fold0": {...}); the mean of a key over the folds. */
  function foldMean(metrics, key) {
    const values = Object.values(metrics || {}).filter((m) => m && typeof m === "object" && m[key] != null).map((m) => +m[key]);
    return values.length ? values.reduce((s, v) => s + v, 0) / values.length : null;
  }

  function runSeconds(e) {
    if (!e.started_at) return null;
    const end = e.finished_at ? Date.parse(e.finished_at + (e.finished_at.endsWith("Z") || e.finished_at.includes("+") ? "" : "Z")) : Date.now();
    return (end - Date.parse(e.started_at + (e.started_at.endsWith("Z") || e.started_at.includes("+") ? "" : "Z"))) / 1000;
  }

  function progressOf(lines) {
    for (let i = lines.length - 1; i >= 0; i--) {
      const match = /Training Epoch: (\d+) \/ (\d+)/.exec(lines[i]);
      if (match) return { epoch: +match[1], epochs: +match[2] };
    }
    return null;
  }

  function statusBadge(status, extra) {
    return `<span class="status status-${esc(status)}">${esc(status)}${extra ? " " + esc(extra) : ""}</span>`;
  }

  /* ---- charts ------------------------------------------------------------------------------------ */

  /** Draw the four charts from {label: charts.json}; several labels overlay (folds or experiments). */
  let resizeTimer = null;
  function drawCharts(root, chartsByLabel) {
    if (!root.dataset.resizes) {
      root.dataset.resizes = "1";
      window.addEventListener("resize", () => {
        clearTimeout(resizeTimer);
        resizeTimer = setTimeout(() => drawCharts(root, root.chartData), 100);
      });
    }
    root.chartData = chartsByLabel;
    const labels = Object.keys(chartsByLabel);
    for (const figure of $$(".chart", root)) {
      const spec = CHARTS[figure.dataset.chart];
      const series = [];
      labels.forEach((label, index) => {
        const charts = chartsByLabel[label] || {};
        const key = spec.keys.find((k) => charts[k] && (charts[k].step || []).length);
        if (!key) return;
        const name = labels.length > 1 ? label : key.replace("validation_", "");
        series.push({ name: name, x: charts[key].step, y: charts[key].value,
          color: window.smokesegCharts.PALETTE[index % 8] });
      });
      window.smokesegCharts.lineChart($(".plot", figure), series, {
        label: `${$("figcaption", figure).textContent} chart`, zero: spec.zero, smooth: spec.smooth && labels.length === 1,
        logIfWide: spec.logIfWide,
        legend: labels.length > 1,
      });
    }
  }

  /* ---- datasets ---------------------------------------------------------------------------------- */

  function initDatasets() {
    const form = $("#import-form");
    const show = () => {
      const kind = $("input[name=kind]:checked", form).value;
      for (const node of $$("[data-kind]", form)) node.hidden = node.dataset.kind !== kind;
    };
    $$("input[name=kind]", form).forEach((radio) => radio.addEventListener("change", show));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const status = $("#import-status");
      const name = $("#ds-name").value.trim();
      const kind = $("input[name=kind]:checked", form).value;
      status.className = ""; status.textContent = "Importing and checking every image…";
      try {
        let dataset;
        if (kind === "upload") {
          const file = $("#ds-file").files[0];
          if (!file) throw new Error("Pick a .zip file to upload.");
          const data = new FormData(); data.append("name", name); data.append("file", file);
          dataset = await api("POST", "/v1/datasets", data);
        } else {
          const s3 = {};
          for (const key of ["endpoint_url", "access_key_id", "secret_access_key", "region"]) {
            const value = form.elements[key].value.trim();
            if (value) s3[key] = value;
          }
          const body = { name: name, source: $("#ds-source").value.trim() };
          if (Object.keys(s3).length) body.s3 = s3;
          dataset = await api("POST", "/v1/datasets/import", body);
        }
        window.location.href = `/datasets/${dataset.id}`;
      } catch (error) {
        status.className = "errors"; status.textContent = error.message;
      }
    });
    show();
  }

  function initDataset() {
    const button = $("#delete-dataset");
    button.addEventListener("click", async () => {
      if (!window.confirm("Delete this dataset and its files?")) return;
      try { await api("DELETE", `/v1/datasets/${button.dataset.id}`); window.location.href = "/datasets"; }
      catch (error) { $("#dataset-status").className = "errors"; $("#dataset-status").textContent = error.message; }
    });
  }

  /* ---- experiments table ------------------------------------------------------------------------- */

  function initExperiments() {
    const names = JSON.parse($("#dataset-names").textContent);
    const body = $("#experiments-table tbody");
    const compare = $("#compare-selected");
    const selected = new Set();
    let timer = null;

    async function refresh() {
      clearTimeout(timer);
      let rows;
      try { rows = await api("GET", "/v1/experiments"); }
      catch (error) { $("#table-status").textContent = error.message; timer = setTimeout(refresh, 5000); return; }
      rows.sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
      const progress = {};
      await Promise.all(rows.filter((e) => e.status === "running").map(async (e) => {
        try {
          const detail = await api("GET", `/v1/experiments/${e.id}`);
          const p = progressOf(detail.folds.flatMap((f) => f.log));
          const fold = detail.folds.length ? detail.folds[detail.folds.length - 1].fold : null;
          if (p) progress[e.id] = `epoch ${p.epoch}/${p.epochs}${fold !== null ? ` · fold ${fold}` : ""}`;
        } catch (error) { /* finished meanwhile */ }
      }));
      if (!rows.length) body.innerHTML = '<tr><td colspan="8">No experiments yet: <a href="/experiments/new">start one</a>.</td></tr>';
      else body.innerHTML = rows.map((e) => {
        const live = !FINAL.has(e.status);
        return `<tr data-id="${esc(e.id)}" data-status="${esc(e.status)}">
          <td><input type="checkbox" class="pick" value="${esc(e.id)}" aria-label="Select ${esc(e.name)} to compare" ${selected.has(e.id) ? "checked" : ""}></td>
          <th scope="row"><a href="/experiments/${esc(e.id)}">${esc(e.name)}</a></th>
          <td>${esc(names[e.dataset_id] || e.dataset_id)}</td>
          <td>${statusBadge(e.status, progress[e.id])}${e.error ? `<div class="hint wrap">${esc(e.error.slice(0, 160))}</div>` : ""}</td>
          <td class="num">${number(foldMean(e.metrics, "validation_IoU"), 4)}</td>
          <td class="num">${number(foldMean(e.metrics, "test_IoU"), 4)}</td>
          <td class="num">${duration(runSeconds(e))}</td>
          <td class="row-actions">
            <a href="/experiments/${esc(e.id)}">Open</a>
            <a href="/experiments/new?from=${esc(e.id)}">Clone</a>
            ${live ? `<button type="button" data-action="cancel">Cancel</button>` : `<button type="button" class="danger" data-action="delete">Delete</button>`}
          </td></tr>`;
      }).join("");
      $("#table-status").textContent = `${rows.length} experiment(s), updated ${new Date().toLocaleTimeString()}`;
      timer = setTimeout(refresh, rows.some((e) => !FINAL.has(e.status)) ? 2000 : 15000);
    }

    body.addEventListener("change", (event) => {
      if (!event.target.classList.contains("pick")) return;
      if (event.target.checked) selected.add(event.target.value); else selected.delete(event.target.value);
      compare.disabled = selected.size < 2;
    });
    body.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const id = button.closest("tr").dataset.id, action = button.dataset.action;
      if (action === "delete" && !window.confirm("Delete this experiment and its files?")) return;
      try {
        if (action === "cancel") await api("POST", `/v1/experiments/${id}/cancel`);
        else { await api("DELETE", `/v1/experiments/${id}`); selected.delete(id); }
      } catch (error) { $("#table-status").textContent = error.message; }
      refresh();
    });
    compare.addEventListener("click", () => {
      window.location.href = "/compare?" + Array.from(selected).map((id) => `ids=${encodeURIComponent(id)}`).join("&");
    });
    refresh();
  }

  /* ---- new experiment ---------------------------------------------------------------------------- */

  function fieldValue(field) {
    const input = $("input, select", field), kind = field.dataset.kind;
    if (kind === "bool") return input.checked;
    const raw = input.value.trim();
    if (kind === "int" || kind === "float") return raw === "" ? null : Number(raw);
    if (kind === "list") return raw ? raw.split(",").map((s) => s.trim()).filter(Boolean) : [];
    return raw;
  }

  function showError(id, message) {
    const node = document.getElementById(`${id}-error`);
    if (!node) return false;
    node.textContent = node.textContent ? `${node.textContent} ${message}` : message;
    node.hidden = false;
    const input = document.getElementById(id);
    if (input) input.setAttribute("aria-invalid", "true");
    return true;
  }

  function initNewExperiment() {
    const form = $("#experiment-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      for (const node of $$(".field-error", form)) { node.hidden = true; node.textContent = ""; }
      for (const node of $$("[aria-invalid]", form)) node.removeAttribute("aria-invalid");
      const errors = $("#form-errors"); errors.hidden = true; errors.textContent = "";
      const config = {};
      for (const field of $$(".field[data-section]", form)) {
        const value = fieldValue(field);
        if (value === null) continue;
        (config[field.dataset.section] = config[field.dataset.section] || {})[field.dataset.key] = value;
      }
      const start = $("#f-architecture-init_from").value;  /* experiment:<id>, resolved by the API */
      if (start) (config.architecture = config.architecture || {}).init_from = start;
      const body = { name: $("#f-name").value.trim(), dataset_id: $("#f-dataset").value, config: config,
        config_yaml: $("#f-yaml").value };
      const status = $("#form-status");
      status.textContent = "Validating…";
      try {
        const created = await api("POST", "/v1/experiments", body);
        window.location.href = `/experiments/${created.id}`;
      } catch (error) {
        status.textContent = "";
        const unplaced = [];
        for (const line of error.message.split("\n")) {
          const text = line.trim();
          if (!text || text.startsWith("Invalid config")) continue;
          const keyed = /^([a-z_]+)\.([a-z_]+)(?: = .*?)?: (.*)$/.exec(text);
          const unknown = /unknown key '([a-z_]+)' in section '([a-z_]+)'/.exec(text);
          if (keyed && showError(`f-${keyed[1]}-${keyed[2]}`, text)) continue;
          if (/^name\b/.test(text) && showError("f-name", text)) continue;
          if (/^dataset_id\b|No dataset/.test(text) && showError("f-dataset", text)) continue;
          if ((unknown || keyed || /YAML|yaml/.test(text)) && showError("f-yaml", text)) {
            $("details.advanced", form).open = true; continue;
          }
          unplaced.push(text);
        }
        if (unplaced.length) { errors.textContent = unplaced.join("\n"); errors.hidden = false; }
        const first = $("[aria-invalid=true]", form) || errors;
        if (first.focus) first.focus();
      }
    });
  }

  /* ---- experiment page --------------------------------------------------------------------------- */

  function metricsTable(metrics) {
    const folds = Object.keys(metrics || {}).filter((k) => metrics[k] && typeof metrics[k] === "object");
    if (!folds.length) return null;
    const keys = Array.from(new Set(folds.flatMap((f) => Object.keys(metrics[f])))).filter((k) => k !== "fold");
    const head = `<tr><th scope="col">metric</th>${folds.map((f) => `<th scope="col">${esc(f)}</th>`).join("")}</tr>`;
    const rows = keys.map((k) => `<tr><th scope="row" title="${esc(k)}">${esc(metricLabel(k))}</th>${folds.map((f) =>
      `<td class="num">${k.endsWith("_time_s") ? duration(metrics[f][k]) : esc(number(metrics[f][k], SCORE.test(k) ? 4 : undefined))}</td>`).join("")}</tr>`);
    return `<table class="metrics" id="metrics-table">${head}${rows.join("")}</table>`;
  }

  function initExperiment() {
    const root = $("#experiment"), id = root.dataset.id;
    const charts = {}, log = $("#log"), predictions = {};

    function setStatus(status, error) {
      root.dataset.status = status;
      const badge = $("#status"); badge.textContent = status; badge.className = `status status-${status}`;
      $("#cancel").hidden = FINAL.has(status);
      $("#score-link").hidden = status !== "succeeded";
      if (error) { $("#error").textContent = error; $("#error").hidden = false; }
    }

    function showFailure(error) {
      $("#error").textContent = error.message; $("#error").hidden = false;
    }

    function redraw() {
      const labels = Object.keys(charts).sort();
      const byLabel = {}; for (const fold of labels) byLabel[`fold${fold}`] = charts[fold];
      drawCharts(root, byLabel);
    }

    function drawGallery() {
      const limit = +$("#iou-max").value;
      $("#iou-max-value").textContent = limit.toFixed(2);
      const tiles = Object.entries(predictions).flatMap(([fold, rows]) => rows.map((r) => ({ fold: fold, ...r })))
        .filter((r) => r.iou == null || r.iou <= limit + 1e-9)
        .filter((r) => !$("#false-alarms-only").checked || r.false_regions > 0)
        .sort((a, b) => (b.loss ?? -1) - (a.loss ?? -1));
      const total = Object.values(predictions).reduce((n, rows) => n + rows.length, 0);
      const gallery = $("#gallery");
      if (!total) { gallery.innerHTML = "<p>Appears when validation has run.</p>"; return; }
      gallery.innerHTML = tiles.slice(0, 48).map((r) => `<figure class="tile">
          <img loading="lazy" src="/ui/experiments/${esc(id)}/gallery/${esc(r.fold)}/${encodeURIComponent(r.image_id)}"
            alt="${esc(r.image_id)}: ground truth and prediction" width="646">
          <figcaption><b>${esc(r.image_id)}</b><br>${r.false_regions ? `${r.false_regions} false region${r.false_regions > 1 ? "s" : ""} · ` : ""}IoU ${number(r.iou, 3)} · Dice ${number(r.dice, 3)} · loss ${number(r.loss, 3)}${Object.keys(predictions).length > 1 ? ` · fold ${esc(r.fold)}` : ""}</figcaption>
        </figure>`).join("") || ($("#false-alarms-only").checked ? "<p>No image with a false region at or below this IoU.</p>" : "<p>No image at or below this IoU.</p>");
      $("#gallery-title").textContent = `Validation gallery (${Math.min(tiles.length, 48)} of ${total})`;
    }

    async function loadDetail() {
      const detail = await api("GET", `/v1/experiments/${id}`);
      setStatus(detail.status, detail.error);
      for (const fold of detail.folds) {
        charts[fold.fold] = fold.charts;
        predictions[fold.fold] = fold.validation_predictions;
      }
      redraw();
      if (!log.textContent) log.textContent = detail.folds.flatMap((f) => f.log).join("\n");
      log.scrollTop = log.scrollHeight;
      const table = metricsTable(detail.metrics);
      if (table) $("#metrics").innerHTML = table;
      const test = Object.entries(detail.metrics || {}).filter(([, m]) => m && m.test_IoU != null);
      if (test.length) {
        $("#test-results").innerHTML = `<table id="test-table"><tr><th scope="col">fold</th><th scope="col">test IoU</th><th scope="col">test Dice</th><th scope="col">mean per-image IoU</th><th scope="col">images</th></tr>${
          test.map(([fold, m]) => `<tr><th scope="row">${esc(fold)}</th><td class="num">${number(m.test_IoU, 4)}</td><td class="num">${number(m.test_Dice, 4)}</td><td class="num">${number(m.test_mean_image_IoU, 4)}</td><td class="num">${number(m.test_observations)}</td></tr>`).join("")}</table>`;
      } else if (FINAL.has(detail.status)) {
        $("#test-results").innerHTML = "<p>No test split in this dataset.</p>";
      }
      drawGallery();
      const files = await api("GET", `/ui/experiments/${id}/files`);
      const links = [`<li><a href="/ui/experiments/${esc(id)}/config.yaml" download>Config YAML</a></li>`];
      const names = { checkpoint: "Checkpoint", validation_predictions: "Validation predictions (Parquet)", test_predictions: "Test predictions (Parquet)" };
      for (const [fold, kinds] of Object.entries(files)) {
        for (const [kind, url] of Object.entries(kinds)) links.push(`<li><a href="${esc(url)}" download>${names[kind]}, fold ${esc(fold)}</a></li>`);
      }
      if (detail.package_url) links.push(`<li><a href="${esc(detail.package_url)}" download>Scoring package (zip)</a></li>`);
      if (detail.report_url) links.push(`<li><a href="${esc(detail.report_url)}">HTML report</a></li>`);
      $("#downloads").innerHTML = links.join("");
      return detail;
    }

    function follow() {
      const source = new EventSource(`/v1/experiments/${id}/events`);
      $("#live").textContent = "· live";
      log.textContent = "";
      source.addEventListener("log", (event) => {
        const data = JSON.parse(event.data);
        log.textContent += (log.textContent ? "\n" : "") + data.line;
        log.scrollTop = log.scrollHeight;
        const p = progressOf([data.line]);
        if (p) $("#progress").textContent = `epoch ${p.epoch}/${p.epochs}, fold ${data.fold}`;
      });
      source.addEventListener("charts", (event) => {
        const data = JSON.parse(event.data);
        charts[data.fold] = data.charts;
        redraw();
      });
      source.addEventListener("status", (event) => {
        const data = JSON.parse(event.data); setStatus(data.status, data.error);
      });
      source.addEventListener("end", (event) => {
        source.close();
        $("#live").textContent = ""; $("#progress").textContent = "";
        if (JSON.parse(event.data).status === "deleted") { showFailure(new Error("This experiment was deleted.")); return; }
        loadDetail().catch(showFailure);
      });
      source.onerror = () => { if (source.readyState === EventSource.CLOSED) $("#live").textContent = "· disconnected"; };
    }

    $("#iou-max").addEventListener("input", drawGallery);
    $("#false-alarms-only").addEventListener("change", drawGallery);
    $("#cancel").addEventListener("click", async () => {
      try { const e = await api("POST", `/v1/experiments/${id}/cancel`); setStatus(e.status); }
      catch (error) { $("#error").textContent = error.message; $("#error").hidden = false; }
    });
    loadDetail().then((detail) => { if (!FINAL.has(detail.status)) follow(); }).catch(showFailure);
  }

  /* ---- compare ----------------------------------------------------------------------------------- */

  async function initCompare() {
    const root = $("#comparison");
    const ids = root.dataset.ids ? root.dataset.ids.split(",") : [];
    if (ids.length < 2) return;
    let comparison;
    try { comparison = await api("GET", "/v1/compare?" + ids.map((i) => `ids=${encodeURIComponent(i)}`).join("&")); }
    catch (error) { root.innerHTML = `<p class="errors" role="alert">${esc(error.message)}</p>`; return; }
    const names = {}; for (const e of comparison.experiments) names[e.id] = e.name;
    const label = (i) => `${names[i]} (${i})`;
    const details = await Promise.all(ids.map((i) => api("GET", `/v1/experiments/${i}`)));
    const byLabel = {};
    for (const detail of details) {
      for (const fold of detail.folds) byLabel[detail.folds.length > 1 ? `${detail.name} f${fold.fold}` : detail.name] = fold.charts;
    }
    drawCharts(root, byLabel);
    const head = `<tr><th scope="col">metric</th>${ids.map((i) => `<th scope="col">${esc(label(i))}</th>`).join("")}</tr>`;
    const metricRows = Object.entries(comparison.metrics).filter(([metric]) => !/(^|\.)fold$/.test(metric)).map(([metric, values]) => {
      const numbers = ids.map((i) => values[i]).filter((v) => typeof v === "number");
      const higher = /IoU|Dice/.test(metric), lower = /loss/.test(metric);
      const best = higher ? Math.max(...numbers) : lower ? Math.min(...numbers) : null;
      return `<tr><th scope="row" title="${esc(metric)}">${esc(metricLabel(metric))}</th>${ids.map((i) => {
        const v = values[i];
        const differ = new Set(numbers).size > 1;
        const mark = best !== null && differ && v === best ? ' class="num best" title="best"' : ' class="num"';
        return `<td${mark}>${metric.endsWith("_time_s") ? duration(v) : esc(number(v, SCORE.test(metric) ? 4 : undefined))}</td>`;
      }).join("")}</tr>`;
    });
    $("#compare-metrics").innerHTML = `<table id="compare-metrics-table">${head}${metricRows.join("")}</table>`;
    const diffs = Object.entries(comparison.config_differences);
    $("#compare-config").innerHTML = diffs.length ? `<table id="compare-config-table">${head.replace("metric", "config key")}${diffs.map(([key, values]) =>
      `<tr class="differs"><th scope="row">${esc(key)}</th>${ids.map((i) => `<td class="wrap"><mark>${esc(JSON.stringify(values[i]))}</mark></td>`).join("")}</tr>`).join("")}</table>`
      : "<p>The configs are the same.</p>";
  }

  /* ---- predict ----------------------------------------------------------------------------------- */

  function initPredict() {
    const form = $("#predict-form"), input = $("#p-files"), drop = $("#drop");
    let files = [];
    const setFiles = (list) => {
      files = Array.from(list).filter((f) => f.type.startsWith("image/") || /\.(jpe?g|png|bmp|tiff?|webp)$/i.test(f.name));
      drop.textContent = files.length ? `${files.length} image(s): ${files.map((f) => f.name).join(", ")}` : "Drop images here or press to pick";
    };
    input.addEventListener("change", () => setFiles(input.files));
    drop.addEventListener("click", () => input.click());
    drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); } });
    drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); setFiles(event.dataTransfer.files); });
    /** A server folder's images, fetched as files so that scoring goes through /v1/predict as uploads do. */
    async function folderFiles(folder) {
      const listing = await api("GET", `/ui/server-images?folder=${encodeURIComponent(folder)}`);
      if (!listing.images.length) throw new Error(`${listing.folder} holds no image.`);
      return Promise.all(listing.images.map(async (name) => {
        const path = `${listing.folder}/${name}`;
        const response = await fetch(`/ui/server-images/file?path=${encodeURIComponent(path)}`);
        if (!response.ok) throw new Error(`${path}: ${response.status}`);
        const blob = await response.blob();
        return new File([blob], name, { type: blob.type || "application/octet-stream" });
      }));
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const status = $("#predict-status");
      const folder = $("#p-folder").value.trim();
      if (!files.length && !folder) { status.className = "errors"; status.textContent = "Pick or drop at least one image, or name a folder."; return; }
      const params = new URLSearchParams({ model: $("#p-model").value, images: "overlays" });
      if ($("#p-threshold").value !== "") params.set("threshold", $("#p-threshold").value);
      status.className = "";
      try {
        const chosen = folder ? await folderFiles(folder) : files;
        status.textContent = `Scoring ${chosen.length} image(s)…`;
        const result = { model: $("#p-model").value, predictions: [] };
        for (let start = 0; start < chosen.length; start += 16) {  /* under the server's per-request limits */
          const data = new FormData();
          for (const file of chosen.slice(start, start + 16)) data.append("files", file, file.name);
          const part = await api("POST", `/v1/predict?${params}`, data);
          result.predictions.push(...part.predictions);
          status.textContent = `Scored ${result.predictions.length} of ${chosen.length} image(s)…`;
        }
        status.textContent = `Scored ${result.predictions.length} image(s) with ${result.model}.`;
        $("#results").innerHTML = result.predictions.map((p) => `<figure class="tile result" data-smoke="${p.smoke}">
            <img src="data:image/jpeg;base64,${p.images.overlays}" alt="${esc(p.image_id)} with the predicted smoke and its boxes">
            <figcaption><b>${esc(p.image_id)}</b> <span class="verdict ${p.smoke ? "smoke" : "clear"}">${p.smoke ? "smoke" : "no smoke"}</span><br>
            confidence ${number(p.confidence, 3)} · smoke share ${(100 * p.smoke_fraction).toFixed(2)}% · ${p.boxes.length} box(es) · ${p.width}×${p.height}</figcaption></figure>`).join("");
        const columns = ["image_id", "smoke", "confidence", "smoke_fraction", "probability_max", "probability_mean", "threshold", "height", "width", "boxes", "rle_mask"];
        const cell = (v) => { const s = typeof v === "object" ? JSON.stringify(v) : String(v); return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; };
        const csv = [columns.join(","), ...result.predictions.map((p) => columns.map((c) => cell(p[c])).join(","))].join("\n");
        const link = $("#predictions-csv");
        if (link.href) URL.revokeObjectURL(link.href);
        link.href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
        link.hidden = false;
      } catch (error) { status.className = "errors"; status.textContent = error.message; }
    });
  }

  const PAGES = { datasets: initDatasets, dataset: initDataset, experiments: initExperiments,
    new_experiment: initNewExperiment, experiment: initExperiment, compare: initCompare, predict: initPredict };
  document.addEventListener("DOMContentLoaded", () => {
    const init = PAGES[document.body.dataset.page];
    if (init) init();
  });
})();
