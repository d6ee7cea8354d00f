"use strict";
// The drawing pad: strokes in canvas pixels, redrawn on every change; an uploaded image is the
// base layer. The current image is sent to /api/predict while drawing, one request in flight
// at a time (the newest drawing wins), so answers keep up without flooding the server.
(() => {
  const $ = (id) => document.getElementById(id);
  const pad = $("pad"), ctx = pad.getContext("2d");
  const seen = $("seen"), seenCtx = seen.getContext("2d");
  const LINE_WIDTH = 22; // px on the 280 px pad: MNIST-like strokes once scaled to 20 px
  let strokes = [], stroke = null, base = null; // base: {file, bitmap}
  let inflight = false, pending = false, generation = 0, lastImage = null, feedbackOn = false;

  // --- drawing -----------------------------------------------------------------------------
  function paint() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    if (base && base.bitmap) {
      const s = Math.min(pad.width / base.bitmap.width, pad.height / base.bitmap.height);
      const w = base.bitmap.width * s, h = base.bitmap.height * s;
      ctx.drawImage(base.bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    }
    ctx.strokeStyle = "#000";
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const points of strokes) {
      ctx.beginPath();
      ctx.moveTo(points[0].x, points[0].y);
      if (points.length === 1) ctx.lineTo(points[0].x + 0.01, points[0].y);
      for (const p of points.slice(1)) ctx.lineTo(p.x, p.y);
      ctx.stroke();
    }
  }

  function point(e) {
    const r = pad.getBoundingClientRect();
    return { x: ((e.clientX - r.left) * pad.width) / r.width, y: ((e.clientY - r.top) * pad.height) / r.height };
  }

  pad.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    stroke = [point(e)];
    strokes.push(stroke);
    paint();
    schedule();
  });
  pad.addEventListener("pointermove", (e) => {
    if (!stroke) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of events.length ? events : [e]) stroke.push(point(ev));
    paint();
    schedule();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    pad.addEventListener(type, () => {
      if (!stroke) return;
      stroke = null;
      schedule();
    });
  }

  function changed() {
    generation += 1;
    paint();
    if (strokes.length || base) schedule();
    else {
      reset("Draw a digit in the box.");
      if (!inflight) document.body.dataset.state = "idle";
    }
  }
  $("undo").addEventListener("click", () => {
    if (strokes.length) strokes.pop();
    else base = null;
    changed();
  });
  $("clear").addEventListener("click", () => {
    strokes = [];
    base = null;
    changed();
  });
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); $("undo").click(); }
    if (e.key === "Escape") $("clear").click();
  });

  // --- upload: file picker or drop ----------------------------------------------------------
  async function useFile(file) {
    if (!file) return;
    let bitmap = null;
    try { bitmap = await createImageBitmap(file); } catch (err) { bitmap = null; } // the server says why
    strokes = [];
    base = { file, bitmap };
    changed();
  }
  $("file").addEventListener("change", (e) => { useFile(e.target.files[0]); e.target.value = ""; });
  const frame = $("pad-frame");
  frame.addEventListener("dragover", (e) => { e.preventDefault(); frame.classList.add("dragging"); });
  frame.addEventListener("dragleave", () => frame.classList.remove("dragging"));
  frame.addEventListener("drop", (e) => {
    e.preventDefault();
    frame.classList.remove("dragging");
    useFile(e.dataTransfer.files[0]);
  });

  // --- prediction ---------------------------------------------------------------------------
  function currentImage() {
    if (base && !strokes.length) return Promise.resolve(base.file); // the file itself, full quality
    return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  }

  function schedule() {
    document.body.dataset.state = "busy"; // "idle" once the answer to the latest image is shown
    if (inflight) { pending = true; return; }
    send();
  }

  async function send() {
    if (!strokes.length && !base) { document.body.dataset.state = "idle"; return; }
    inflight = true;
    pending = false;
    const asked = generation;
    try {
      const image = await currentImage();
      const start = performance.now();
      const res = await fetch("/api/predict", {
        method: "POST", headers: { "Content-Type": image.type || "application/octet-stream" }, body: image,
      });
      const body = await res.json();
      const ms = performance.now() - start;
      if (asked !== generation && !pending) pending = true; // cleared or undone meanwhile: ask again
      if (!strokes.length && !base) { /* cleared meanwhile */ }
      else if (res.ok) { show(body, ms); lastImage = image; }
      else { reset(res.status === 429 ? "Slow down a little…" : body.error || `error ${res.status}`, res.status !== 422); }
    } catch (err) {
      reset(`The server cannot be reached (${err.message}).`, true);
    } finally {
      inflight = false;
      if (pending) schedule();
      else document.body.dataset.state = "idle";
    }
  }

  function bars(probabilities, top) {
    const list = $("bars");
    list.replaceChildren(...probabilities.map((p, d) => {
      const li = document.createElement("li");
      li.className = d === top ? "top" : "";
      li.dataset.digit = String(d);
      li.innerHTML = `<span>${d}</span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
      li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
      li.querySelector(".pct").textContent = `${(100 * p).toFixed(1)}%`;
      return li;
    }));
  }

  function show(result, ms) {
    const sure = result.sure !== false, pct = `${(100 * result.confidence).toFixed(1)}%`;
    $("digit").textContent = result.answer ?? String(result.digit);
    $("digit").classList.toggle("unsure", !sure);
    $("confidence").textContent = sure ? `${pct} sure` : `best guess ${result.digit}, ${pct}`;
    $("feedback-prompt").textContent = sure ? "Wrong? It was:" : "What was it?";
    $("latency").textContent = `answered in ${ms.toFixed(0)} ms`;
    bars(result.probabilities, result.digit);
    const raw = atob(result.pixels), img = seenCtx.createImageData(28, 28);
    for (let i = 0; i < 784; i += 1) {
      const v = raw.charCodeAt(i);
      img.data.set([v, v, v, 255], 4 * i);
    }
    seenCtx.putImageData(img, 0, 0);
    status("");
    $("feedback").hidden = !feedbackOn;
    $("feedback-status").textContent = "";
  }

  function reset(message, isError = false) {
    $("digit").textContent = "?";
    $("digit").classList.remove("unsure");
    $("confidence").innerHTML = "&nbsp;";
    $("latency").innerHTML = "&nbsp;";
    bars(new Array(10).fill(0), -1);
    seenCtx.clearRect(0, 0, 28, 28);
    $("feedback").hidden = true;
    lastImage = null;
    status(message, isError);
  }

  function status(message, isError = false) {
    $("status").textContent = message;
    $("status").classList.toggle("error", isError);
  }

  // --- feedback -----------------------------------------------------------------------------
  function asBase64(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  async function sendFeedback(label) {
    if (!lastImage) return;
    const line = $("feedback-status");
    try {
      const res = await fetch("/api/feedback", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image: await asBase64(lastImage), label }),
      });
      const body = await res.json();
      if (!res.ok) line.textContent = body.error;
      else if (body.conflict) {
        line.textContent = `Your label ${label} disagrees with an earlier label for this image, so it is kept aside `
          + `(${body.saved}) until a person reviews it. Thank you!`;
      } else line.textContent = `Saved as a ${label} (${body.saved}). Thank you!`;
    } catch (err) {
      line.textContent = `Not saved: ${err.message}`;
    }
  }

  const labels = $("labels");
  for (let d = 0; d < 10; d += 1) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = String(d);
    b.dataset.label = String(d);
    b.title = `store this image as a ${d}`;
    b.addEventListener("click", () => sendFeedback(d));
    labels.appendChild(b);
  }

  fetch("/api/info").then((r) => r.json()).then((info) => {
    $("model").textContent = info.model;
    feedbackOn = info.feedback;
  }).catch(() => { $("model").textContent = "unknown"; });

  paint();
  reset("Draw a digit in the box.");
})();
