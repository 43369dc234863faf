// The avatars benchmark's renderer: DiceBear avataaars faces, rasterised by resvg on white.
//
//   node avatars.mjs MODULES SIZE EXCLUDE_JSON
//
// MODULES: a folder whose node_modules holds @dicebear/core, @dicebear/avataaars and
// @resvg/resvg-js (make bench-data installs them there); SIZE: width and height in pixels;
// EXCLUDE_JSON: {"option": ["value", ...]} values removed from the style's defaults, so that a
// normal face never draws them. Then one job a line on stdin, {"seed": "...", "force": {...}}
// (options replacing the normal ones), answered on stdout by SIZE*SIZE*4 bytes of RGBA pixels,
// opaque. The options never change how many draws the seeded generator makes, so a face drawn
// again with one part forced keeps every other part.
import { createRequire } from "node:module";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const [modules, sizeArg, excludeArg] = process.argv.slice(2);
const require = createRequire(join(modules, "package.json"));
const load = (name) => import(pathToFileURL(require.resolve(name)).href);
const { createAvatar } = await load("@dicebear/core");
const avataaars = await load("@dicebear/avataaars");
const { Resvg } = require("@resvg/resvg-js");

const size = Number(sizeArg);
const exclude = JSON.parse(excludeArg);
const normal = { style: ["default"], backgroundColor: [] }; // no background: drawn on white
for (const [option, values] of Object.entries(exclude)) {
  const all = avataaars.schema.properties[option]?.default;
  if (!Array.isArray(all)) throw new Error(`avataaars has no list option ${option}`);
  normal[option] = all.filter((v) => !values.includes(v));
}

function render(job) {
  const svg = createAvatar(avataaars, { ...normal, ...job.force, seed: job.seed }).toString();
  const resvg = new Resvg(svg, {
    fitTo: { mode: "width", value: size },
    background: "#ffffff",
    font: { loadSystemFonts: false }, // the style draws no text
  });
  const image = resvg.render();
  if (image.width !== size || image.height !== size) {
    throw new Error(`rendered ${image.width}x${image.height}, expected ${size}x${size}`);
  }
  return image.pixels;
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  if (!process.stdout.write(render(JSON.parse(line)))) {
    await new Promise((resolve) => process.stdout.once("drain", resolve));
  }
}
