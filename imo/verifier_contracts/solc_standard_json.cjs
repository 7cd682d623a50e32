// Compile a Solidity standard-JSON input (stdin) with the npm `solc` package; print the standard-JSON output.
// Imports (e.g. "@openzeppelin/contracts/...") are resolved against the node_modules folder given as argv[2].
const fs = require('fs');
const path = require('path');
const nodeModules = process.argv[2];
const solc = require(path.join(nodeModules, 'solc'));
const input = fs.readFileSync(0, 'utf8');
function findImports(importPath) {
  const file = path.join(nodeModules, importPath);
  if (fs.existsSync(file)) return { contents: fs.readFileSync(file, 'utf8') };
  return { error: `import not found: ${importPath} (looked in ${nodeModules})` };
}
process.stdout.write(solc.compile(input, { import: findImports }));
