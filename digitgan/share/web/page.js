"use strict";
// The exported generator (generator.onnx) run in the browser by onnxruntime-web's wasm backend; everything else
// the page shows comes from run.json and the files beside it (written by `python dcgan.py export`).

const PAD = 2;  // the trainer's grid layout (digitgan/core/pictures.py: grid): images 2 px apart on grey
const $ = (id) => document.getElementById(id);
window.timings = [];  // milliseconds per grid of new pictures, for bench/site.py

// mulberry32: a small seeded generator, so that the page's noise can be replayed
function random(seed) {
  return () => {
    seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// n noise vectors from the run's prior: N(0, 1) (Box-Muller) or uniform in [-1, 1] (the seed preset)
function noise(run, n, rand) {
  const z = new Float32Array(n * run.config.z_dim);
  for (let i = 0; i < z.length; i++) {
    z[i] = run.config.z_dist === "uniform" ? 2 * rand() - 1
      : Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  }
  return z;
}

// Spherical interpolation for Gaussian z (it keeps the norm the generator saw), straight for uniform z
// (it stays inside the cube): as digitgan/share/walks.py does.
function between(run, a, b, t) {
  if (run.config.z_dist !== "normal") return a.map((v, i) => (1 - t) * v + t * b[i]);
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  const omega = Math.acos(Math.max(-1, Math.min(1, dot / Math.sqrt(na * nb)))), s = Math.sin(omega);
  if (Math.abs(s) < 1e-6) return a.map((v, i) => (1 - t) * v + t * b[i]);
  const wa = Math.sin((1 - t) * omega) / s, wb = Math.sin(t * omega) / s;
  return a.map((v, i) => wa * v + wb * b[i]);
}

// The images (n, channels, side, side) in [-1, 1] that the generator draws from z, and for a conditional model
// the labels
async function draw(session, run, z, labels) {
  const n = z.length / run.config.z_dim;
  const feeds = { z: new ort.Tensor("float32", z, [n, run.config.z_dim]) };
  if (run.conditional) feeds.label = new ort.Tensor("int64", BigInt64Array.from(labels, (c) => BigInt(c)), [n]);
  const out = await session.run(feeds);
  return out.images.data;
}

// A grid like the trainer's PNGs: grey background, 2 px apart, [-1, 1] -> 0..255; the images' side and channels
// from run.json (an export from before they were recorded: 32x32 grey)
function paint(canvas, images, cols, run) {
  const SIZE = run.resolution || 32, channels = run.channels || 1, plane = SIZE * SIZE;
  const n = images.length / (channels * plane), rows = Math.ceil(n / cols);
  const w = cols * (SIZE + PAD) + PAD, h = rows * (SIZE + PAD) + PAD;
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
  img.data.fill(128);
  for (let p = 3; p < img.data.length; p += 4) img.data[p] = 255;
  for (let i = 0; i < n; i++) {
    const top = PAD + Math.floor(i / cols) * (SIZE + PAD), left = PAD + (i % cols) * (SIZE + PAD);
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        const p = 4 * ((top + y) * w + left + x);
        for (let c = 0; c < 3; c++) {  // grey: the one channel in all three
          const at = (i * channels + (channels === 1 ? 0 : c)) * plane + y * SIZE + x;
          img.data[p + c] = Math.round((Math.min(1, Math.max(-1, images[at])) + 1) * 127.5);
        }
      }
    }
  }
  ctx.putImageData(img, 0, 0);
}

function table(run) {
  const keys = ["fid", "kid", "precision", "recall", "density", "coverage", "classes_covered", "class_accuracy"];
  const got = run.metrics, ref = run.reference || {};
  if (!got) return "<tr><td>No quality figures: the run trained with --eval-every 0.</td></tr>";
  const fmt = (v) => (v === undefined || v === null ? "" : Number(v).toPrecision(4));
  const space = ref.features ? `, in ${ref.features}` : "";
  return `<tr><th>at step ${got.step} (${ref.eval_num || run.config.eval_num} samples vs ${ref.real_images || "the"} real images${space})</th>` +
    `<th>this model</th><th>real data</th></tr>` +
    keys.filter((k) => k in got).map((k) => `<tr><td>${k}</td><td>${fmt(got[k])}</td><td>${fmt(ref[k])}</td></tr>`).join("");
}

async function main() {
  const run = await (await fetch("run.json")).json();
  const cfg = run.config, classes = run.classes;
  document.querySelectorAll(".step").forEach((e) => { e.textContent = run.step; });
  $("about").textContent = `A ${cfg.preset} generator trained on ${cfg.dataset} for ${run.step} steps` +
    (run.conditional ? ", conditional: it draws the class you pick." : ".");
  $("config").textContent = JSON.stringify(cfg, null, 1);
  $("metrics").innerHTML = table(run);
  for (const [id, file] of [["animation", "progress.gif"], ["losses", "losses.png"], ["metrics-plot", "metrics.png"]]) {
    $(id).hidden = !run.files[file];  // a run without quality tracking has no metrics.png
    if (run.files[file]) $(id).querySelector("img").src = file;
  }

  // The run's record: its grids by step
  const scrub = $("scrub");
  if (run.grids.length) {
    scrub.max = run.grids.length - 1;
    scrub.value = run.grids.length - 1;
    const show = () => {
      const g = run.grids[scrub.value];
      $("timeline").src = g.file;
      $("scrub-step").textContent = g.step;
    };
    scrub.oninput = show;
    show();
    const own = run.grids.find((g) => g.step === run.step);
    if (own) $("trainer").src = own.file;
  } else {
    $("timeline-section").hidden = true;
  }

  ort.env.wasm.numThreads = 1;  // no cross-origin isolation needed: any static host will do
  ort.env.wasm.wasmPaths = "./";
  const session = await ort.InferenceSession.create("generator.onnx", { executionProviders: ["wasm"] });

  // The fixed-noise grid of the exported step, from the run's own noise
  const fixed = await draw(session, run, Float32Array.from(run.fixed.z), run.fixed.labels);
  paint($("fixed"), fixed, run.fixed.cols, run);

  // New pictures: a grid of them as the run's unconditional grid is laid out, of one class or a balanced set
  const rand = random(Date.now() >>> 0);
  if (run.conditional) {
    $("class-picker").hidden = false;
    classes.forEach((name, c) => $("class").add(new Option(/^\d$/.test(name) ? `${name}s` : name, String(c))));
    $("styles-section").hidden = false;
  }
  async function newPictures() {
    const picked = $("class").value, n = run.layout.n;
    const z = noise(run, n, rand);
    const labels = run.conditional ? Array.from({ length: n }, (_, i) => (picked === "" ? Math.floor(i * classes.length / n) : Number(picked))) : null;
    const t0 = performance.now();
    const images = await draw(session, run, z, labels);
    paint($("live"), images, run.layout.cols, run);
    const ms = performance.now() - t0;
    window.timings.push(ms);
    window.lastDraw = { z: Array.from(z), labels };
    $("time").textContent = `${ms.toFixed(1)} ms for ${n} pictures`;
  }
  async function newStyles() {  // laid out as the run's conditional grid: row c drawn as class c, a z per column
    const cols = run.fixed.cols, shown = run.fixed.n / cols, z = noise(run, cols, rand);
    const all = new Float32Array(cols * shown * cfg.z_dim);
    for (let c = 0; c < shown; c++) all.set(z, c * cols * cfg.z_dim);  // row c: the same z drawn as class c
    const labels = Array.from({ length: cols * shown }, (_, i) => Math.floor(i / cols));
    paint($("styles"), await draw(session, run, all, labels), cols, run);
  }

  // The latent walk: 8 pairs of ends, the slider's fraction of the way
  let ends;
  async function walk() {
    const t = Number($("t").value) / 100, dim = cfg.z_dim, z = new Float32Array(8 * dim);
    for (let i = 0; i < 8; i++) {
      z.set(between(run, ends[0].subarray(i * dim, (i + 1) * dim), ends[1].subarray(i * dim, (i + 1) * dim), t), i * dim);
    }
    const labels = run.conditional ? Array.from({ length: 8 }, (_, i) => i % classes.length) : null;
    paint($("walk"), await draw(session, run, z, labels), 8, run);
  }
  async function newEnds() {
    ends = [noise(run, 8, rand), noise(run, 8, rand)];
    await walk();
  }
  let busy = Promise.resolve();  // one drawing at a time: the slider fires faster than the model runs
  const queue = (fn) => () => { busy = busy.then(fn).catch(fail); };
  $("new").onclick = queue(newPictures);
  $("class").onchange = queue(newPictures);
  $("new-styles").onclick = queue(newStyles);
  $("new-ends").onclick = queue(newEnds);
  $("t").oninput = queue(walk);

  await newPictures();
  if (run.conditional) await newStyles();
  await newEnds();
  for (const id of ["new", "new-styles", "new-ends", "t"]) $(id).disabled = false;
  window.pageReady = performance.now();  // interactive: every control works from here on
  document.body.dataset.ready = "1";
}

function fail(e) {
  console.error(e);
  $("error").hidden = false;
  $("error").textContent = `Something went wrong: ${e.message || e}`;
}

main().catch(fail);
