// The covidsite study viewer: a cornerstone3D stack viewport over the stored DICOM instances, with
// the run's label maps drawn on top (lung contour, ground glass, consolidation, heat map), a side
// panel whose opacity list jumps to each opacity, a clickable per-slice curve and a lazy 3D view.
//
// Overlays arrive per slice as RGB PNGs already cut into the image's own (row, column) grid by the
// server; they are drawn with the affine transform that cornerstone uses for the image itself
// (image pixel -> patient mm -> canvas), so they stay on the right pixels under zoom and pan.
import {
  Enums,
  RenderingEngine,
  imageLoader,
  init as coreInit,
  metaData,
} from '@cornerstonejs/core';
import { init as loaderInit } from '@cornerstonejs/dicom-image-loader';
import { composeOverlay, parseColour } from './overlay.js';

const VIEWPORT_ID = 'ct';
const ENGINE_ID = 'covidsite';

const root = document.getElementById('viewer');
const config = JSON.parse(document.getElementById('viewer-config').textContent);
const element = document.getElementById('viewport');
const overlayCanvas = document.getElementById('overlay-canvas');
const slider = document.getElementById('slice-slider');
const sliceInfo = root.querySelector('[data-role="slice-info"]');
const voiInfo = root.querySelector('[data-role="voi-info"]');
const loadInfo = root.querySelector('[data-role="load-info"]');
// Times in ms since the page was opened (performance.now() counts from the navigation start).
const timings = { scriptStart: performance.now() };

const layers = {
  lungs: { on: true, opacity: 0.9 },
  ggo: { on: true, opacity: 0.45 },
  consolidation: { on: true, opacity: 0.55 },
  heat: { on: false, opacity: 0.5 },
};
const colours = {
  lungs: [56, 189, 248],
  ggo: parseColour(config.colours.ggo),
  consolidation: parseColour(config.colours.consolidation),
};
const labelCache = new Map(); // slice index -> Promise<ImageData | null>
const layerCanvas = document.createElement('canvas');
let layerIndex = -1; // the slice whose overlay layerCanvas holds
let viewport;

function setState(state) {
  root.dataset.state = state;
}

function currentIndex() {
  return viewport ? viewport.getCurrentImageIdIndex() : 0;
}

// --- overlays ------------------------------------------------------------------------------------

function labels(index) {
  if (!config.overlays) return Promise.resolve(null);
  if (!labelCache.has(index)) {
    const url = config.overlays.url.replace('{index}', String(index));
    const promise = fetch(url, { credentials: 'same-origin' })
      .then(async (response) => {
        if (!response.ok) {
          // The server says why in JSON (no finished analysis, a label map that no longer fits, ...).
          const reason = await response.json().then((body) => body.error, () => `HTTP ${response.status}`);
          throw new Error(`overlay of slice ${index + 1}: ${reason}`);
        }
        return response.blob();
      })
      .then((blob) => createImageBitmap(blob, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' }))
      .then((bitmap) => {
        const canvas = document.createElement('canvas');
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
        const context = canvas.getContext('2d', { willReadFrequently: true });
        context.drawImage(bitmap, 0, 0);
        return context.getImageData(0, 0, bitmap.width, bitmap.height);
      })
      .catch((error) => {
        labelCache.delete(index);
        loadInfo.textContent = `Overlay not shown: ${error.message}`;
        return null;
      });
    labelCache.set(index, promise);
  }
  return labelCache.get(index);
}

async function refreshOverlay() {
  const index = currentIndex();
  const data = await labels(index);
  if (index !== currentIndex()) return; // the user moved on meanwhile
  if (data) {
    layerCanvas.width = data.width;
    layerCanvas.height = data.height;
    layerCanvas.getContext('2d').putImageData(composeOverlay(data, layers, colours), 0, 0);
    layerIndex = index;
  } else {
    layerIndex = -1;
  }
  drawOverlay();
}

function imageToWorld(plane, u, v) {
  // (u, v): drawing coordinates on the image, pixel (c, r) covering [c, c + 1) x [r, r + 1);
  // ImagePositionPatient is the centre of pixel (0, 0).
  const { imagePositionPatient: ipp, rowCosines: rc, columnCosines: cc } = plane;
  const du = (u - 0.5) * plane.columnPixelSpacing;
  const dv = (v - 0.5) * plane.rowPixelSpacing;
  return [0, 1, 2].map((k) => ipp[k] + du * rc[k] + dv * cc[k]);
}

function drawOverlay() {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.round(element.clientWidth * dpr);
  const height = Math.round(element.clientHeight * dpr);
  if (overlayCanvas.width !== width || overlayCanvas.height !== height) {
    overlayCanvas.width = width;
    overlayCanvas.height = height;
  }
  const context = overlayCanvas.getContext('2d');
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.clearRect(0, 0, width, height);
  const index = currentIndex();
  if (!viewport || layerIndex !== index) return;
  const plane = metaData.get('imagePlaneModule', config.imageIds[index]);
  if (!plane || !plane.imagePositionPatient) return;
  const p0 = viewport.worldToCanvas(imageToWorld(plane, 0, 0));
  const pu = viewport.worldToCanvas(imageToWorld(plane, 1, 0));
  const pv = viewport.worldToCanvas(imageToWorld(plane, 0, 1));
  context.setTransform(
    dpr * (pu[0] - p0[0]), dpr * (pu[1] - p0[1]),
    dpr * (pv[0] - p0[0]), dpr * (pv[1] - p0[1]),
    dpr * p0[0], dpr * p0[1],
  );
  context.imageSmoothingEnabled = false;
  context.drawImage(layerCanvas, 0, 0);
  root.dataset.overlaySlice = String(index);
}

// --- navigation ----------------------------------------------------------------------------------

function showSliceInfo() {
  const index = currentIndex();
  const position = config.positions[index];
  sliceInfo.textContent = `Slice ${index + 1} / ${config.slices}` +
    (position !== undefined ? ` · z ${position.toFixed(1)} mm` : '');
  slider.value = String(index + 1);
  root.dataset.slice = String(index);
}

function showVoi() {
  const { voiRange } = viewport.getProperties();
  if (!voiRange) return;
  const width = voiRange.upper - voiRange.lower;
  const centre = (voiRange.upper + voiRange.lower) / 2;
  voiInfo.textContent = `W ${Math.round(width)} · L ${Math.round(centre)}`;
  // A preset button stays pressed only while its window is the one shown (dragging changes it).
  root.querySelectorAll('[data-preset]').forEach((button) => {
    const preset = config.presets[button.dataset.preset];
    const shown = Math.abs(preset.width - width) < 1 && Math.abs(preset.center - centre) < 1;
    button.setAttribute('aria-pressed', String(shown));
  });
}

async function goTo(index) {
  const target = Math.max(0, Math.min(config.slices - 1, index));
  if (target !== currentIndex()) await viewport.setImageIdIndex(target);
  return target;
}

function applyPreset(name) {
  const preset = config.presets[name];
  viewport.setProperties({ voiRange: { lower: preset.center - preset.width / 2, upper: preset.center + preset.width / 2 } });
  viewport.render();
  showVoi();
}

function centreOn(index, row, column) {
  const plane = metaData.get('imagePlaneModule', config.imageIds[index]);
  if (!plane || !plane.imagePositionPatient) return;
  const target = imageToWorld(plane, column + 0.5, row + 0.5);
  const camera = viewport.getCamera();
  const normal = camera.viewPlaneNormal;
  const delta = [0, 1, 2].map((k) => target[k] - camera.focalPoint[k]);
  const along = delta[0] * normal[0] + delta[1] * normal[1] + delta[2] * normal[2];
  const shift = delta.map((d, k) => d - along * normal[k]); // stay on the image plane
  viewport.setCamera({
    focalPoint: camera.focalPoint.map((v, k) => v + shift[k]),
    position: camera.position.map((v, k) => v + shift[k]),
  });
  viewport.render();
}

async function jumpToOpacity(number) {
  const opacity = config.opacities[number];
  if (!opacity) return;
  await goTo(opacity.slice);
  centreOn(opacity.slice, opacity.row, opacity.column);
  root.querySelectorAll('.opacity-jump').forEach((button, k) => {
    button.setAttribute('aria-current', String(k === number));
  });
  root.dataset.opacity = String(number);
}

function bindControls() {
  slider.addEventListener('input', () => goTo(Number(slider.value) - 1));
  element.addEventListener('keydown', (event) => {
    const steps = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    let target;
    if (event.key in steps) target = currentIndex() + steps[event.key];
    else if (event.key === 'Home') target = 0;
    else if (event.key === 'End') target = config.slices - 1;
    else return;
    event.preventDefault();
    goTo(target);
  });
  element.addEventListener('mousedown', () => element.focus());
  element.addEventListener('contextmenu', (event) => event.preventDefault());
  root.querySelectorAll('[data-preset]').forEach((button) => {
    button.addEventListener('click', () => applyPreset(button.dataset.preset));
  });
  root.querySelector('[data-action="reset"]').addEventListener('click', () => {
    viewport.resetCamera();
    applyPreset('lung');
  });
  root.querySelectorAll('[data-layer]').forEach((box) => {
    box.addEventListener('change', () => {
      layers[box.dataset.layer].on = box.checked;
      refreshOverlay();
    });
    box.checked = layers[box.dataset.layer].on && !box.disabled;
  });
  root.querySelectorAll('[data-opacity]').forEach((range) => {
    range.addEventListener('input', () => {
      layers[range.dataset.opacity].opacity = Number(range.value) / 100;
      refreshOverlay();
    });
    range.value = String(Math.round(layers[range.dataset.opacity].opacity * 100));
  });
  root.querySelectorAll('.opacity-jump').forEach((button) => {
    button.addEventListener('click', () => jumpToOpacity(Number(button.dataset.opacityIndex)));
  });
  new ResizeObserver(() => {
    if (viewport) {
      engine.resize(true, true);
      drawOverlay();
    }
  }).observe(element);
}

// --- plots (plotly.js, loaded after the first image) ----------------------------------------------

let plotly;
function loadPlotly() {
  if (!plotly) {
    plotly = new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = root.dataset.plotly;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => reject(new Error('plotly.js could not be loaded'));
      document.head.appendChild(script);
    });
  }
  return plotly;
}

async function drawSliceCurve() {
  const source = document.getElementById('slice-curve-data');
  const target = document.getElementById('slice-curve-plot');
  if (!source || !target) return;
  const Plotly = await loadPlotly();
  const figure = JSON.parse(source.textContent);
  await Plotly.newPlot(target, figure.data, figure.layout, { displaylogo: false, responsive: true });
  target.on('plotly_click', (event) => {
    if (event.points && event.points.length) goTo(Math.round(event.points[0].x) - 1);
  });
  target.dataset.ready = 'true';
}

function drawSurfacesWhenVisible() {
  const target = document.getElementById('surfaces-plot');
  if (!target) return;
  const observer = new IntersectionObserver(async (entries) => {
    if (!entries.some((entry) => entry.isIntersecting)) return;
    observer.disconnect();
    try {
      const [Plotly, response] = await Promise.all([loadPlotly(), fetch(target.dataset.url, { credentials: 'same-origin' })]);
      const figure = await response.json();
      if (!response.ok) throw new Error(figure.error || `HTTP ${response.status}`);
      target.textContent = '';
      await Plotly.newPlot(target, figure.data, figure.layout, { displaylogo: false, responsive: true });
      target.dataset.ready = 'true';
    } catch (error) {
      target.innerHTML = '';
      const message = document.createElement('p');
      message.className = 'alert alert-error';
      message.textContent = `The 3D view could not be drawn: ${error.message}`;
      target.appendChild(message);
    }
  }, { rootMargin: '200px' });
  observer.observe(target);
}

// --- start ---------------------------------------------------------------------------------------

async function prefetchAll(first) {
  // Neighbours first, so scrolling from the first slice finds its images decoded.
  const order = config.imageIds.map((_, k) => k).filter((k) => k !== first)
    .sort((a, b) => Math.abs(a - first) - Math.abs(b - first));
  let failed = 0;
  await Promise.all(order.map((k) => imageLoader.loadAndCacheImage(config.imageIds[k]).catch(() => { failed += 1; })));
  timings.allLoaded = performance.now();
  root.dataset.allLoaded = 'true';
  root.dataset.failedImages = String(failed);
  loadInfo.textContent = failed
    ? `${failed} of ${config.slices} images could not be loaded`
    : `${config.slices} images loaded in ${(timings.allLoaded / 1000).toFixed(2)} s`;
  for (const k of order) labels(k); // overlays after the images: they are small
}

let engine;
async function start() {
  await coreInit();
  // Decoding is the slow part of loading a series: one worker per core (the main thread mostly waits).
  loaderInit({ maxWebWorkers: Math.max(1, Math.min(4, navigator.hardwareConcurrency || 2)) });
  engine = new RenderingEngine(ENGINE_ID);
  engine.enableElement({
    viewportId: VIEWPORT_ID,
    type: Enums.ViewportType.STACK,
    element,
    defaultOptions: { background: [0, 0, 0] },
  });
  viewport = engine.getViewport(VIEWPORT_ID);

  element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => {
    showSliceInfo();
    refreshOverlay();
  });
  element.addEventListener(Enums.Events.IMAGE_RENDERED, drawOverlay);
  element.addEventListener(Enums.Events.VOI_MODIFIED, showVoi);
  bindControls();

  const first = Math.floor((config.slices - 1) / 2);
  const firstRender = new Promise((resolve) => {
    element.addEventListener(Enums.Events.IMAGE_RENDERED, resolve, { once: true });
  });
  await viewport.setStack(config.imageIds, first);
  applyPreset('lung');
  showSliceInfo();
  showVoi();
  await firstRender;
  timings.firstImage = performance.now();
  prefetchAll(first);
  const overlayDrawn = refreshOverlay();
  // The mouse tools are a large module the first image does not need: load them next, as their own chunk.
  const { activateTools } = await import('./tools.js');
  activateTools(ENGINE_ID, VIEWPORT_ID, element);
  await overlayDrawn;
  setState('ready');
  drawSliceCurve();
  drawSurfacesWhenVisible();
}

window.covidViewer = {
  timings,
  config,
  layers,
  currentIndex,
  goTo: (index) => goTo(index),
  jumpToOpacity: (number) => jumpToOpacity(number),
  refreshOverlay: () => refreshOverlay(),
  get viewport() {
    return viewport;
  },
};

start().catch((error) => {
  setState('error');
  sliceInfo.textContent = '';
  loadInfo.textContent = `The viewer could not start: ${error.message || error}`;
  console.error(error);
});
