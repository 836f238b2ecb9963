// Usage: node validate.mjs FILE.json [FILE.json …]
// Prints {"FILE": [{severity, code, message, path}, …], …}; exits 1 when any document has an error.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate.mjs FILE [FILE…]");
  process.exit(2);
}
const parser = new Parser();
const report = {};
let failed = false;
for (const file of files) {
  const { document, diagnostics } = await parser.parse(await readFile(file, "utf8"), { source: file });
  report[file] = diagnostics.map((d) => ({
    severity: ["error", "warning", "information", "hint"][d.severity] ?? String(d.severity),
    code: d.code,
    message: d.message,
    path: d.path,
  }));
  if (!document || diagnostics.some((d) => d.severity === DiagnosticSeverity.Error)) failed = true;
}
console.log(JSON.stringify(report, null, 1));
process.exit(failed ? 1 : 0);
