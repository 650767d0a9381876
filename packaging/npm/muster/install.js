"use strict";
// postinstall: put the native binary where the `muster` command points
// (bin/muster), so running muster does not start node first. muster hook
// runs on every harness hook; node's start-up would be added to each call.
//
// Nothing here fails the install: if the binary is missing or will not run,
// bin/muster stays the node launcher, which explains what is wrong when run.

const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");
const { binaryPath } = require("./lib/platform.js");

function main() {
  if (process.platform === "win32") return; // npm's .cmd shims run bin/muster with node
  const bin = binaryPath();
  if (bin instanceof Error) {
    console.warn(`muster: ${bin.message}`);
    return;
  }
  const launcher = path.join(__dirname, "bin", "muster");
  const staged = `${launcher}.${process.pid}.tmp`;
  try {
    try {
      fs.linkSync(bin, staged);
    } catch (_) {
      fs.copyFileSync(bin, staged);
    }
    fs.chmodSync(staged, 0o755);
    const version = execFileSync(staged, ["--version"], { encoding: "utf8", timeout: 10000 });
    if (!version.startsWith("muster ")) throw new Error(`unexpected --version output ${JSON.stringify(version)}`);
    fs.renameSync(staged, launcher);
  } catch (err) {
    try {
      fs.unlinkSync(staged);
    } catch (_) {}
    console.warn(`muster: keeping the node launcher (${err.message})`);
  }
}

main();
