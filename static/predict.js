// The predict page: pick or drop views, POST them as one study, show the result.
// Every string that comes from the server or from a file name is inserted with textContent, never as HTML.
// DICOM views get a placeholder instead of a preview, so nothing from a DICOM file (header or burned-in
// annotation) is ever drawn on screen; the answer's DICOM fields hold no patient attribute.
"use strict";

(function () {
  const form = document.getElementById("study-form");
  const fileInput = document.getElementById("file-input");
  const dropZone = document.getElementById("drop-zone");
  const previews = document.getElementById("previews");
  const submitButton = document.getElementById("submit-button");
  const clearButton = document.getElementById("clear-button");
  const statusLine = document.getElementById("status");
  const errorBox = document.getElementById("error");
  const resultSection = document.getElementById("result");
  const srButton = document.getElementById("sr-button");

  const apiKeyRow = document.getElementById("api-key-row");
  const apiKeyInput = document.getElementById("api-key");
  // The API key lives in sessionStorage: this tab only, gone when it closes; never in localStorage.
  const API_KEY_STORAGE = "triage-api-key";
  apiKeyInput.value = sessionStorage.getItem(API_KEY_STORAGE) || "";
  apiKeyRow.hidden = apiKeyInput.value === "";

  let files = [];
  let previewUrls = [];

  const bodyPartNames = {
    XR_ELBOW: "Elbow", XR_FINGER: "Finger", XR_FOREARM: "Forearm", XR_HAND: "Hand",
    XR_HUMERUS: "Humerus", XR_SHOULDER: "Shoulder", XR_WRIST: "Wrist",
  };

  function percent(probability) {
    return (100 * probability).toFixed(1) + " %";
  }

  // Control, format (bidirectional overrides, zero-width) and separator characters are shown as \uXXXX,
  // so "evil\u202egnp.exe" cannot display as "evilexe.png" (the service escapes the names it echoes alike).
  function displayName(name) {
    return name.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (character) => {
      const code = character.codePointAt(0);
      return code < 0x100 ? "\\x" + code.toString(16).padStart(2, "0")
        : "\\u" + code.toString(16).padStart(4, "0");
    });
  }

  function partName(bodyPart) {
    return bodyPartNames[bodyPart] || bodyPart;
  }

  function setText(id, text) {
    document.getElementById(id).textContent = text;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearMessages() {
    errorBox.hidden = true;
    errorBox.textContent = "";
    statusLine.textContent = "";
  }

  function looksLikeDicom(file) {
    return file.type === "application/dicom" || /\.(dcm|dicom)$/i.test(file.name);
  }

  function placeholder(text) {
    const element = document.createElement("div");
    element.className = "no-preview";
    element.textContent = text;
    return element;
  }

  function previewOf(file, index) {
    if (looksLikeDicom(file)) {
      return placeholder("DICOM view " + (index + 1));
    }
    const image = document.createElement("img");
    const url = URL.createObjectURL(file);
    previewUrls[index] = url;  // by file: a DICOM file has no entry
    image.alt = "Preview of view " + (index + 1) + ": " + displayName(file.name);
    // Not an image the browser can show (the service will say whether it can read it).
    image.addEventListener("error", () => image.replaceWith(placeholder("No preview")));
    image.src = url;
    return image;
  }

  function renderPreviews() {
    previewUrls.forEach((url) => url && URL.revokeObjectURL(url));
    previewUrls = [];
    previews.replaceChildren();
    files.forEach((file, index) => {
      const item = document.createElement("li");
      const preview = previewOf(file, index);
      const caption = document.createElement("span");
      caption.textContent = displayName(file.name);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove " + displayName(file.name));
      remove.addEventListener("click", () => {
        files.splice(index, 1);
        renderPreviews();
      });
      item.append(preview, caption, remove);
      previews.append(item);
    });
    submitButton.disabled = files.length === 0;
    clearButton.disabled = files.length === 0;
  }

  function addFiles(fileList) {
    clearMessages();
    for (const file of fileList) {
      files.push(file);
    }
    renderPreviews();
  }

  fileInput.addEventListener("change", () => {
    addFiles(fileInput.files);
    fileInput.value = "";
  });

  dropZone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      fileInput.click();
    }
  });
  ["dragenter", "dragover"].forEach((type) => dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
  }));
  dropZone.addEventListener("drop", (event) => {
    if (event.dataTransfer && event.dataTransfer.files.length) {
      addFiles(event.dataTransfer.files);
    }
  });

  clearButton.addEventListener("click", () => {
    files = [];
    renderPreviews();
    clearMessages();
    resultSection.hidden = true;
  });

  // The triage category at the expert's two operating points; said plainly when the repository has none.
  function renderTriage(study) {
    const triage = document.getElementById("result-triage");
    const points = study.operating_points;
    triage.textContent = study.triage || "not available";
    triage.className = "triage " + (study.triage || "none");
    setText("result-operating-points", points
      ? "rule-out " + percent(points.rule_out) + ", rule-in " + percent(points.rule_in)
        + (study.calibrated ? ", calibrated probability" : "")
      : "this model has no operating points");
    [["rule-out-mark", points && points.rule_out], ["rule-in-mark", points && points.rule_in]].forEach(([id, value]) => {
      const mark = document.getElementById(id);
      mark.hidden = !points;
      if (points) {
        mark.style.left = (100 * value).toFixed(1) + "%";
      }
    });
  }

  function renderResult(result) {
    const study = result.study;
    setText("result-body-part", partName(study.body_part));
    setText("result-body-part-confidence", "(confidence " + percent(study.body_part_confidence) + ")");
    setText("result-abnormality", percent(study.abnormality));
    const label = document.getElementById("result-label");
    label.textContent = study.label;
    label.className = "label " + (study.label === "abnormal" ? "abnormal" : "normal");
    setText("result-threshold", "threshold " + percent(study.threshold) + ", " + study.aggregation + " of "
      + study.n_images + (study.n_images === 1 ? " view" : " views"));

    const bar = document.getElementById("abnormality-bar");
    bar.setAttribute("aria-valuenow", (100 * study.abnormality).toFixed(1));
    bar.setAttribute("aria-valuetext", percent(study.abnormality) + ", " + study.label);
    const fill = document.getElementById("abnormality-fill");
    fill.style.width = (100 * study.abnormality).toFixed(1) + "%";
    fill.className = "bar-fill " + (study.label === "abnormal" ? "abnormal" : "normal");
    document.getElementById("threshold-mark").style.left = (100 * study.threshold).toFixed(1) + "%";
    renderTriage(study);

    const warningList = document.getElementById("warning-list");
    warningList.replaceChildren();
    study.warnings.forEach((warning) => {
      const item = document.createElement("li");
      item.textContent = warning;
      warningList.append(item);
    });
    document.getElementById("warnings").hidden = study.warnings.length === 0;

    const rows = document.getElementById("views-body");
    rows.replaceChildren();
    result.images.forEach((view) => {
      const row = document.createElement("tr");
      [displayName(view.name), partName(view.body_part), percent(view.body_part_confidence), percent(view.abnormality)]
        .forEach((text) => {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.append(cell);
        });
      rows.append(row);
    });
    renderExplanations(result.images);
    setText("result-models", "Models: router " + result.models.router + ", expert " + result.models.expert
      + " · " + Math.round(result.timing_ms.total) + " ms");
    const dicom = study.dicom;
    setText("result-dicom", dicom ? "DICOM study: modality " + dicom.modality + ", body part examined "
      + (dicom.body_part_examined || "not given") : "");
    document.getElementById("result-dicom").hidden = !dicom;
    srButton.hidden = !dicom;
    resultSection.hidden = false;
  }

  function renderExplanations(views) {
    // One figure per view: the heatmap overlay, or the view itself when the toggle is off.
    const list = document.getElementById("explanation-list");
    const toggle = document.getElementById("overlay-toggle");
    list.replaceChildren();
    const explained = views.filter((view) => view.explanation);
    explained.forEach((view) => {
      const index = views.indexOf(view);
      const item = document.createElement("li");
      const image = document.createElement("img");
      image.className = "explanation";
      image.dataset.overlay = view.explanation.heatmap;
      // The view itself when the browser previewed its file; views and files pair up one to one unless a
      // multi-frame DICOM gave several views. DICOM files are never previewed here.
      const original = views.length === files.length ? previewUrls[index] : undefined;
      image.dataset.original = original || view.explanation.heatmap;
      image.src = toggle.checked ? image.dataset.overlay : image.dataset.original;
      image.alt = "Heatmap of " + displayName(view.name) + ", peak at x " + view.explanation.peak[0]
        + ", y " + view.explanation.peak[1];
      const caption = document.createElement("span");
      caption.textContent = displayName(view.name) + " · peak (" + view.explanation.peak.join(", ") + ") · "
        + view.explanation.method;
      item.append(image, caption);
      list.append(item);
    });
    document.getElementById("explanations").hidden = explained.length === 0;
  }

  document.getElementById("overlay-toggle").addEventListener("change", (event) => {
    document.querySelectorAll("#explanation-list img.explanation").forEach((image) => {
      image.src = event.target.checked ? image.dataset.overlay : image.dataset.original;
    });
  });

  function requestHeaders(headers) {
    const apiKey = apiKeyInput.value.trim();
    if (apiKey) {
      sessionStorage.setItem(API_KEY_STORAGE, apiKey);
      headers.Authorization = "Bearer " + apiKey;
    }
    return headers;
  }

  function studyBody() {
    const body = new FormData();
    files.forEach((file) => body.append("image", file, file.name));
    const bodyPart = document.getElementById("body-part").value;
    if (bodyPart) {
      body.append("body_part", bodyPart);
    }
    body.append("aggregation", document.getElementById("aggregation").value);
    return body;
  }

  srButton.addEventListener("click", async () => {
    clearMessages();
    statusLine.textContent = "Preparing the DICOM SR…";
    try {
      const response = await fetch("/predict", {
        method: "POST", body: studyBody(), headers: requestHeaders({ Accept: "application/dicom" }),
      });
      if (!response.ok) {
        statusLine.textContent = "";
        showError(await readError(response));
        return;
      }
      const url = URL.createObjectURL(await response.blob());
      const link = document.createElement("a");
      link.href = url;
      link.download = "triage-result-sr.dcm";
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      statusLine.textContent = "DICOM SR downloaded.";
    } catch (error) {
      statusLine.textContent = "";
      showError("Could not reach the service: " + error.message);
    }
  });

  async function readError(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) {
        return body.error.message + " (HTTP " + response.status + ")";
      }
    } catch (ignored) {
      // Not JSON: fall through to the status line.
    }
    return "The service answered HTTP " + response.status + " " + response.statusText + ".";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (files.length === 0) {
      showError("Choose at least one image first.");
      return;
    }
    clearMessages();
    resultSection.hidden = true;
    const body = studyBody();
    if (document.getElementById("explain").checked) {
      body.append("explain", "true");
    }
    submitButton.disabled = true;
    statusLine.textContent = "Analysing " + files.length + (files.length === 1 ? " view…" : " views…");
    try {
      const response = await fetch("/predict", { method: "POST", body: body, headers: requestHeaders({}) });
      if (response.status === 401) {
        // Ask for the key: show the field, forget a wrong one, and say so.
        sessionStorage.removeItem(API_KEY_STORAGE);
        apiKeyRow.hidden = false;
        apiKeyInput.focus();
      }
      if (!response.ok) {
        statusLine.textContent = "";
        showError(await readError(response));
        return;
      }
      renderResult(await response.json());
      statusLine.textContent = "Done.";
    } catch (error) {
      statusLine.textContent = "";
      showError("Could not reach the service: " + error.message);
    } finally {
      submitButton.disabled = files.length === 0;
    }
  });
})();
