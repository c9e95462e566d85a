// Colours one slice's labels into an RGBA overlay in the image's own pixel grid.
//
// The label image holds the lung label in red (1 right, 2 left), the infection label in green
// (1 ground glass, 2 consolidation) and the heat map in blue (0-255). Layers are blended "over"
// each other in the order heat map, infection fill, lung contour.

export function parseColour(hex) {
  const value = hex.replace('#', '');
  return [0, 2, 4].map((k) => parseInt(value.slice(k, k + 2), 16));
}

// A blue -> cyan -> yellow -> red ramp for the heat map.
const HEAT_STOPS = [
  [0.0, [0, 0, 160]],
  [0.35, [0, 200, 255]],
  [0.65, [255, 230, 0]],
  [1.0, [220, 20, 20]],
];

function heatColour(t) {
  for (let k = 1; k < HEAT_STOPS.length; k += 1) {
    const [t1, c1] = HEAT_STOPS[k];
    if (t <= t1) {
      const [t0, c0] = HEAT_STOPS[k - 1];
      const f = (t - t0) / (t1 - t0);
      return c0.map((v, i) => v + f * (c1[i] - v));
    }
  }
  return HEAT_STOPS[HEAT_STOPS.length - 1][1];
}

const HEAT_TABLE = Array.from({ length: 256 }, (_, v) => heatColour(v / 255));

export function composeOverlay(labels, layers, colours) {
  const { width, height, data } = labels;
  const out = new ImageData(width, height);
  const pixels = out.data;
  const blend = (p, rgb, alpha) => {
    if (alpha <= 0) return;
    const a0 = pixels[p + 3] / 255;
    const a = alpha + a0 * (1 - alpha);
    for (let i = 0; i < 3; i += 1) {
      pixels[p + i] = (rgb[i] * alpha + pixels[p + i] * a0 * (1 - alpha)) / a;
    }
    pixels[p + 3] = a * 255;
  };
  const lung = (x, y) => x >= 0 && y >= 0 && x < width && y < height && data[(y * width + x) * 4] > 0;
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const p = (y * width + x) * 4;
      const heat = data[p + 2];
      if (layers.heat.on && heat > 0) blend(p, HEAT_TABLE[heat], layers.heat.opacity * Math.min(1, heat / 128));
      const infection = data[p + 1];
      if (infection === 1 && layers.ggo.on) blend(p, colours.ggo, layers.ggo.opacity);
      else if (infection === 2 && layers.consolidation.on) blend(p, colours.consolidation, layers.consolidation.opacity);
      if (layers.lungs.on && data[p] > 0
          && !(lung(x - 1, y) && lung(x + 1, y) && lung(x, y - 1) && lung(x, y + 1))) {
        blend(p, colours.lungs, layers.lungs.opacity);
      }
    }
  }
  return out;
}
