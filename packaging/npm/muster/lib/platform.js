"use strict";
// Which platform package carries the native muster binary for this machine,
// and where its binary is. Shared by bin/muster (the launcher) and
// install.js (which puts the binary in the launcher's place).

const fs = require("fs");
const path = require("path");

const MAIN = require("../package.json").name;

// Keep in step with packaging/npm/platforms.tsv.
const PLATFORMS = {
  "linux x64": "linux-x64",
  "linux arm64": "linux-arm64",
  "darwin x64": "darwin-x64",
  "darwin arm64": "darwin-arm64",
  "win32 x64": "win32-x64",
};

function isMusl() {
  if (process.platform !== "linux") return false;
  try {
    const report = process.report && process.report.getReport();
    return !(report && report.header && report.header.glibcVersionRuntime);
  } catch (_) {
    return false;
  }
}

// The package name for this machine, or an Error that says why there is none.
function platformPackage() {
  const key = `${process.platform} ${process.arch}`;
  const suffix = PLATFORMS[key];
  if (!suffix) {
    return new Error(
      `muster has no prebuilt binary for ${key} (there are: ${Object.keys(PLATFORMS).join(", ")}); ` +
        "build it from source with `cargo install --locked --path crates/cli` in a muster checkout"
    );
  }
  if (isMusl()) {
    return new Error(
      "muster's prebuilt Linux binary needs glibc, and this system uses musl (Alpine?); " +
        "build it from source with `cargo install --locked --path crates/cli` in a muster checkout"
    );
  }
  return `${MAIN}-${suffix}`;
}

// The absolute path of the native binary, or an Error that says what to do.
function binaryPath() {
  const pkg = platformPackage();
  if (pkg instanceof Error) return pkg;
  const exe = process.platform === "win32" ? "muster.exe" : "muster";
  let dir;
  try {
    dir = path.dirname(require.resolve(`${pkg}/package.json`));
  } catch (_) {
    return new Error(
      `muster's binary package ${pkg} is not installed. npm installs it with ${MAIN} as an ` +
        "optional dependency; it is missing when optional dependencies were skipped " +
        "(--omit=optional, --no-optional) or the install ran on another platform. " +
        `Reinstall ${MAIN} on this machine, or install ${pkg} next to it.`
    );
  }
  const bin = path.join(dir, "bin", exe);
  if (!fs.existsSync(bin)) {
    return new Error(`${pkg} is installed at ${dir} but has no bin/${exe}; reinstall ${MAIN}`);
  }
  return bin;
}

module.exports = { MAIN, PLATFORMS, platformPackage, binaryPath };
