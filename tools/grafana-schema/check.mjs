// Type-checks Grafana dashboard JSON files against @grafana/schema (see dashboard.ts).
// Usage: node check.mjs DASHBOARD.json...   Exit 0 when all conform, 1 with one line per error.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = path.dirname(fileURLToPath(import.meta.url));
// Each dashboard becomes `const dashboard: LapverseDashboard = <its JSON>;` on line 2 onwards,
// so a diagnostic's line in the generated source minus 1 is its line in the JSON file.
const PREFIX = 'import type { LapverseDashboard } from "./dashboard";\nconst dashboard: LapverseDashboard = ';
const SUFFIX = ";\nexport default dashboard;\n";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node check.mjs DASHBOARD.json...");
  process.exit(2);
}

const problems = [];
const virtual = new Map(); // generated .ts path -> [source, dashboard path]
files.forEach((file, index) => {
  const text = readFileSync(file, "utf8");
  try {
    JSON.parse(text);
  } catch (error) {
    problems.push(`${file}: not JSON: ${error.message}`);
    return;
  }
  virtual.set(path.join(here, `__dashboard_${index}.ts`), [PREFIX + text + SUFFIX, file]);
});

const options = {
  strict: true,
  noEmit: true,
  skipLibCheck: true,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  types: [],
};
const host = ts.createCompilerHost(options);
const { getSourceFile, fileExists, readFile } = host;
host.fileExists = (name) => virtual.has(name) || fileExists(name);
host.readFile = (name) => virtual.get(name)?.[0] ?? readFile(name);
host.getSourceFile = (name, language, ...rest) =>
  virtual.has(name)
    ? ts.createSourceFile(name, virtual.get(name)[0], language)
    : getSourceFile(name, language, ...rest);

const program = ts.createProgram([...virtual.keys()], options, host);
for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
  // one line per problem: TypeScript's chain of reasons joined by " | "
  const chain = ts.flattenDiagnosticMessageText(diagnostic.messageText, " | ");
  const message = chain.replace(/ \| \s+/g, " | ");
  const source = diagnostic.file && virtual.get(diagnostic.file.fileName);
  if (source && diagnostic.start !== undefined) {
    const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
    problems.push(`${source[1]}:${line}: ${message}`);
  } else {
    problems.push(message); // the checker itself is broken (dashboard.ts, node_modules)
  }
}

for (const problem of problems) console.log(problem);
console.log(`${files.length} dashboard(s) checked, ${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
