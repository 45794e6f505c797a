// Puts a JavaScript operator into one module for componentize-js: the SDK
// (panoptes_operator.js), the operator's module (its `import ... from "panoptes_operator"`
// lines dropped, its `export default class` made a plain class) and an entry exporting the
// world's `init` and `process`. Used by `panoptes operator build` and
// scripts/build-operators.sh:
//
//   node bundle.mjs panoptes_operator.js op.js bundle.js
import { readFileSync, writeFileSync } from "node:fs";

const [sdkPath, sourcePath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node bundle.mjs SDK.js OPERATOR.js OUT.js");
  process.exit(2);
}
const importsSdk = /^\s*import\s[^;]*from\s+["']panoptes_operator(\.js)?["'];?\s*$/;
let source = readFileSync(sourcePath, "utf8")
  .split("\n")
  .map((line) => (importsSdk.test(line) ? "" : line))
  .join("\n");
const found = source.match(/export\s+default\s+class\s+([A-Za-z_$][\w$]*)/);
if (!found) {
  console.error(
    `${sourcePath}: an operator module must \`export default class <Name> extends Operator\``,
  );
  process.exit(1);
}
source = source.replace(found[0], `class ${found[1]}`);
const entry = `
let __panoptes_op;
export function init(config) {
  try {
    __panoptes_op = new ${found[1]}();
    __panoptes_op.init(parseConfig(config));
  } catch (e) {
    throw __panoptes.error(e);
  }
}
export function process(frame, input) {
  if (!__panoptes_op) throw { tag: "internal", val: "process was called before init" };
  try {
    return __panoptes.output(__panoptes_op.process(new Frame(frame), __panoptes.input(input)));
  } catch (e) {
    throw __panoptes.error(e);
  }
}
`;
writeFileSync(outPath, `${readFileSync(sdkPath, "utf8")}\n${source}\n${entry}`);
