//! The packages people install muster from, built by the repository's own
//! scripts and installed the way a user would: the npm tarballs into a
//! temporary global prefix, the Debian package into a throwaway dpkg root.
//! Each installed `muster` is then run for real: `--version`, `serve` on an
//! ephemeral loopback port answering `/healthz`, `install claude --dry-run`.
//!
//! What is packaged is the binary under test (`CARGO_BIN_EXE_muster`, the
//! debug build when run by `cargo nextest run`; the scripts strip a copy).
//! The release packages are made by the same scripts from the release build:
//! `scripts/package-npm.sh`, `scripts/package-deb.sh` without `--binary`.
//!
//! Needs node and npm (the npm test), dpkg, dpkg-deb, systemd-analyze,
//! lintian and cargo-deb (`cargo install --locked cargo-deb`; the Debian
//! test). `.ci/run` installs what is missing.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_muster");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Runs a command to completion, panicking with its output if it fails.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tool must be on PATH; the message says what to install.
fn require(tool: &str, how: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{tool} is not on PATH: {how}");
}

fn version_of(bin: &Path) -> String {
    stdout_of(&run_ok(Command::new(bin).arg("--version")))
        .trim()
        .to_string()
}

/// A `muster serve` started from an installed binary. Killed when dropped.
struct Daemon {
    child: Child,
    url: String,
}

impl Daemon {
    /// `cmd` is the serve command; it must listen on an ephemeral loopback port.
    fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .env_remove("MUSTER_URL")
            .env_remove("MUSTER_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{cmd:?} printed no listening line; stderr:\n{err}");
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no loopback URL in {line:?}"))
            .to_string();
        Daemon { child, url }
    }

    fn healthz(&self) -> u16 {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        client
            .get(format!("{}/healthz", self.url))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("GET {}/healthz: {e}", self.url))
    }
}

impl Daemon {
    /// SIGTERM to the process started, then its exit status (within 15 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        run_ok(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "still running 15 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so a launcher passes it on and leaves no daemon behind; then SIGKILL.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `muster install claude --dry-run` in a fresh project: a diff naming the
/// files it would write, with hooks that run `hook_binary` (the installer
/// writes the real path of the binary that runs it), and nothing written.
fn check_install_dry_run(bin: &Path, hook_binary: &Path, home: &Path) {
    let project = tempfile::tempdir().unwrap();
    let out = run_ok(
        Command::new(bin)
            .args(["install", "claude", "--dry-run", "--project"])
            .arg(project.path())
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME"),
    );
    let text = stdout_of(&out);
    let hook = format!(
        "\"{} hook session-start --harness claude\"",
        hook_binary.canonicalize().unwrap().display()
    );
    for word in [".mcp.json", "settings.json", "Nothing was written", &hook] {
        assert!(text.contains(word), "no {word} in the dry run:\n{text}");
    }
    let written: Vec<_> = std::fs::read_dir(project.path()).unwrap().collect();
    assert!(written.is_empty(), "--dry-run wrote {written:?}");
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

fn npm_install(prefix: &Path, cache: &Path, tarballs: &[PathBuf], extra: &[&str]) {
    run_ok(
        Command::new("npm")
            .args(["install", "-g", "--offline", "--no-audit", "--no-fund"])
            .args(extra)
            .arg("--prefix")
            .arg(prefix)
            .arg("--cache")
            .arg(cache)
            .args(tarballs)
            // npm's own settings, not the user's or this machine's.
            .env("npm_config_userconfig", cache.join("npmrc"))
            .env("npm_config_globalconfig", cache.join("global-npmrc")),
    );
}

#[test]
fn npm_tarballs_install_into_a_prefix_and_the_installed_muster_serves() {
    // Proves scripts/package-npm.sh makes a main package and a linux-x64 package that npm installs offline,
    // that the installed `muster` is the native binary (postinstall) or, without install scripts, the node
    // launcher passing arguments and exit codes through, and that it serves and installs.
    require(
        "npm",
        "install Node.js and npm (the npm package is what they install)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let packed = run_ok(
        Command::new(repo_root().join("scripts/package-npm.sh"))
            .arg("--binary")
            .arg(format!("linux-x64={BIN}"))
            .arg("--out")
            .arg(&out_dir),
    );
    let tarballs: Vec<PathBuf> = stdout_of(&packed).lines().map(PathBuf::from).collect();
    let names: Vec<String> = tarballs
        .iter()
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        names,
        [
            format!("muster-ai-muster-{version}.tgz"),
            format!("muster-ai-muster-linux-x64-{version}.tgz")
        ],
        "{}",
        String::from_utf8_lossy(&packed.stderr)
    );

    // The main package names every platform package as an optional dependency.
    let listing = stdout_of(&run_ok(
        Command::new("tar")
            .arg("-xOzf")
            .arg(&tarballs[0])
            .arg("package/package.json"),
    ));
    let manifest: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let optional = manifest["optionalDependencies"].as_object().unwrap();
    for platform in [
        "linux-x64",
        "linux-arm64",
        "darwin-x64",
        "darwin-arm64",
        "win32-x64",
    ] {
        assert_eq!(
            optional.get(&format!("@muster-ai/muster-{platform}")),
            Some(&serde_json::json!(version)),
            "{manifest}"
        );
    }
    assert_eq!(manifest["bin"]["muster"], "bin/muster");

    let prefix = tmp.path().join("prefix");
    let cache = tmp.path().join("npm-cache");
    npm_install(&prefix, &cache, &tarballs, &[]);
    let installed = prefix.join("bin/muster");
    let target = std::fs::canonicalize(&installed).unwrap();
    assert!(
        target.ends_with("lib/node_modules/@muster-ai/muster/bin/muster"),
        "{installed:?} -> {target:?}"
    );
    assert!(
        is_elf(&target),
        "postinstall did not put the native binary at {target:?}"
    );
    assert_eq!(version_of(&installed), version_of(Path::new(BIN)));
    assert!(version_of(&installed).starts_with(&format!("muster {version}")));
    let man = prefix.join("share/man/man1/muster.1");
    let page = std::fs::read_to_string(&man).unwrap_or_else(|e| panic!("{man:?}: {e}"));
    assert!(page.contains(".TH muster 1"), "{page:.200}");

    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut serve = Command::new(&installed);
    serve
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("HOME", &home);
    let daemon = Daemon::start(serve);
    assert_eq!(daemon.healthz(), 200);
    let status = run_ok(Command::new(&installed).args(["--url", &daemon.url, "status", "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["version"], version, "{status}");
    check_install_dry_run(&installed, &target, &home);
    drop(daemon);

    // Without install scripts the command is the node launcher.
    let plain = tmp.path().join("prefix-ignore-scripts");
    npm_install(&plain, &cache, &tarballs, &["--ignore-scripts"]);
    let launcher = plain.join("bin/muster");
    assert!(!is_elf(&std::fs::canonicalize(&launcher).unwrap()));
    assert_eq!(version_of(&launcher), version_of(Path::new(BIN)));
    let unreachable = Command::new(&launcher)
        .args(["--url", "http://127.0.0.1:9", "roster"])
        .env("HOME", &home)
        .env("MUSTER_AUTOSTART", "0")
        .output()
        .unwrap();
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "the launcher must pass the exit code through: {}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
    // A SIGTERM to the launcher (as a service manager sends) reaches the
    // daemon, which shuts down cleanly: the launcher exits 0 and the port closes.
    let mut serve = Command::new(&launcher);
    serve
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data-launcher"))
        .env("HOME", &home);
    let mut daemon = Daemon::start(serve);
    assert_eq!(daemon.healthz(), 200);
    let status = daemon.terminate();
    assert!(status.success(), "launcher after SIGTERM: {status}");
    let after = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("{}/healthz", daemon.url))
        .send();
    assert!(
        after.is_err(),
        "the daemon outlived its launcher: {after:?}"
    );

    // The launcher runs the platform package's binary; hooks name that one.
    let native = plain.join("lib/node_modules/@muster-ai/muster-linux-x64/bin/muster");
    assert!(is_elf(&native), "{native:?}");
    check_install_dry_run(&launcher, &native, &home);
}

/// A dpkg database for a throwaway root that knows only the packages `deb`
/// depends on, as this machine has them installed, so dependencies are
/// checked for real without touching the machine's own database.
fn throwaway_dpkg(tmp: &Path, deb: &Path) -> (PathBuf, PathBuf) {
    let root = tmp.join("root");
    let admin = tmp.join("admin");
    for dir in [
        root.clone(),
        admin.join("info"),
        admin.join("updates"),
        admin.join("triggers"),
    ] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let depends = stdout_of(&run_ok(
        Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends"),
    ));
    let mut status = String::new();
    for dep in depends.split(',').filter(|d| !d.trim().is_empty()) {
        let name = dep.trim().split([' ', '(', ':']).next().unwrap();
        status.push_str(&stdout_of(&run_ok(
            Command::new("dpkg-query").args(["-s", name]),
        )));
        status.push('\n');
    }
    std::fs::write(admin.join("status"), status).unwrap();
    (root, admin)
}

#[test]
fn debian_package_installs_into_a_throwaway_root_with_its_user_unit() {
    // Proves scripts/package-deb.sh makes a .deb that lintian passes and dpkg -i installs (dependencies
    // checked against this machine's), with the binary, man pages, completions and a valid systemd user unit whose ExecStart
    // serves, and that dpkg -r removes again.
    for tool in ["dpkg", "dpkg-deb", "dpkg-query"] {
        require(tool, "this test needs Debian's dpkg tools");
    }
    require(
        "systemd-analyze",
        "apt-get install systemd (systemd-analyze checks the user unit)",
    );
    require(
        "lintian",
        "apt-get install lintian (it checks the package against Debian policy)",
    );
    let has_cargo_deb = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_cargo_deb,
        "cargo-deb is not installed: cargo install --locked cargo-deb"
    );

    let tmp = tempfile::tempdir().unwrap();
    let built = run_ok(
        Command::new(repo_root().join("scripts/package-deb.sh"))
            .arg("--binary")
            .arg(BIN)
            .arg("--fast")
            .arg("--out")
            .arg(tmp.path().join("out")),
    );
    let deb = PathBuf::from(stdout_of(&built).trim());
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        deb.ends_with(format!("muster_{version}-1_amd64.deb")),
        "{deb:?}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let fields = stdout_of(&run_ok(Command::new("dpkg-deb").arg("-f").arg(&deb)));
    for field in [
        "Package: muster",
        &format!("Version: {version}-1"),
        "Depends: libc6",
    ] {
        assert!(fields.contains(field), "no {field:?} in\n{fields}");
    }

    // Debian policy, as lintian checks it; the one tag left is for uploads
    // to Debian's archive (an initial upload closes its ITP bug).
    run_ok(
        Command::new("lintian")
            .args(["--tag-display-limit", "0", "--fail-on", "error,warning"])
            .args(["--suppress-tags", "initial-upload-closes-no-bugs"])
            .arg(&deb),
    );

    let (root, admin) = throwaway_dpkg(tmp.path(), &deb);
    let dpkg = |args: &[&str]| {
        run_ok(
            Command::new("dpkg")
                .arg(format!("--instdir={}", root.display()))
                .arg(format!("--admindir={}", admin.display()))
                // Minimal images exclude docs and man pages; this test looks at them.
                .arg("--path-include=/usr/share/*")
                .args(args),
        )
    };
    dpkg(&["-i", deb.to_str().unwrap()]);

    let installed = root.join("usr/bin/muster");
    assert_eq!(version_of(&installed), version_of(Path::new(BIN)));
    for file in [
        "usr/share/man/man1/muster.1.gz",
        "usr/share/man/man1/muster-serve.1.gz",
        "usr/share/bash-completion/completions/muster",
        "usr/share/zsh/vendor-completions/_muster",
        "usr/share/fish/vendor_completions.d/muster.fish",
        "usr/share/doc/muster/copyright",
    ] {
        assert!(root.join(file).is_file(), "{file} not installed");
    }
    let bash =
        std::fs::read_to_string(root.join("usr/share/bash-completion/completions/muster")).unwrap();
    assert!(bash.contains("complete -F _muster"), "{bash:.200}");
    // The installed script completes for real: `muster ser<TAB>` (serve and
    // service), `muster serve --da<TAB>`.
    let completed = run_ok(Command::new("bash").arg("-c").arg(format!(
        "source {}; \
         COMP_WORDS=(muster ser); COMP_CWORD=1; _muster muster ser muster; echo \"${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(muster serve --da); COMP_CWORD=2; _muster muster --da serve; echo \"${{COMPREPLY[*]}}\"",
        root.join("usr/share/bash-completion/completions/muster").display()
    )));
    assert_eq!(stdout_of(&completed), "serve service\n--data-dir\n");

    // The user unit: systemd accepts it (checked with ExecStart pointed into
    // the throwaway root, where the binary is), and its ExecStart serves.
    let unit_path = root.join("usr/lib/systemd/user/muster.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart in the unit");
    assert_eq!(exec, "/usr/bin/muster serve");
    assert!(unit.contains("WantedBy=default.target"), "{unit}");
    let check_dir = tmp.path().join("unit-check");
    std::fs::create_dir_all(&check_dir).unwrap();
    std::fs::write(
        check_dir.join("muster.service"),
        unit.replace("/usr/bin/muster", installed.to_str().unwrap()),
    )
    .unwrap();
    let verify = run_ok(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(check_dir.join("muster.service")),
    );
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );

    let mut words = exec.split_whitespace();
    let program = root.join(words.next().unwrap().trim_start_matches('/'));
    let mut serve = Command::new(program);
    serve
        .args(words)
        // What the unit's environment would be, on a port of the test's own.
        .env("HOME", tmp.path())
        .env("MUSTER_BIND", "127.0.0.1:0")
        .env("MUSTER_DATA_DIR", tmp.path().join("data"));
    let daemon = Daemon::start(serve);
    assert_eq!(daemon.healthz(), 200);
    check_install_dry_run(&installed, &installed, tmp.path());
    drop(daemon);

    dpkg(&["-r", "muster"]);
    assert!(!installed.exists(), "dpkg -r left {installed:?}");
    assert!(!unit_path.exists(), "dpkg -r left {unit_path:?}");
}
