//! Message functions as a developer meets them on the command line: `tern fn build` a
//! crate, `tern deploy` it to a running `tern dev`, see it in `tern fn list`, publish
//! through it, roll it back and remove it; bad components and bad calls exit 1 with a
//! clear line; `tern dev` deploys a functions directory and redeploys on change.
//!
//! Every child process and every wait is bounded; the dev processes are killed when
//! a test ends, however it ends.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tern_tests::{DevProcess, tern_binary};

/// Longest a `tern` command may take (a cold wasm build of a function included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest wait for a line from `tern dev`.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command said.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn fails(self) -> Self {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit 1; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `tern ARGS` in `cwd` with `TERN_ADMIN_KEY` unset, killed after
/// [`COMMAND_TIMEOUT`].
fn tern(cwd: &Path, args: &[&str]) -> Ran {
    tern_with_env(cwd, args, &[])
}

/// [`tern`] with environment variables set.
fn tern_with_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut child = Command::new(tern_binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("TERN_ADMIN_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tern runs");
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tern {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ran {
        code: status.code(),
        stdout: out.join().expect("reader"),
        stderr: err.join().expect("reader"),
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The passthrough example, built once per test process with `tern fn build`.
fn passthrough() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace();
        let crate_dir = root.join("functions").join("passthrough");
        let crate_arg = crate_dir.to_str().expect("UTF-8 path");
        let ran = tern(&root, &["fn", "build", "--quiet", crate_arg]).ok();
        assert!(ran.stdout.starts_with("built "), "{}", ran.stdout);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let component = target.join("wasm/tern-fn/passthrough.wasm");
        assert!(component.is_file(), "{} missing", component.display());
        component
    })
}

/// `component` with a custom section appended: still valid, other bytes.
fn with_custom_section(component: &[u8], payload: &[u8]) -> Vec<u8> {
    let name = b"tern-test";
    let size = u8::try_from(1 + name.len() + payload.len()).expect("small section");
    let mut out = component.to_vec();
    out.extend_from_slice(&[0, size, u8::try_from(name.len()).expect("short name")]);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

/// One HTTP/1.1 request to the edge (`Connection: close`, bounded by timeouts);
/// returns the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, bearer: &str, body: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("edge reachable");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {bearer}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    let mut raw = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut raw)
        .expect("answer read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

/// `tern fn list --json`'s functions.
fn listed(cwd: &Path, edge: &str) -> Vec<Value> {
    let ran = tern(cwd, &["fn", "list", "--json", "--edge", edge]).ok();
    let listing: Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(listing["edge"], "dev", "{listing}");
    listing["functions"].as_array().expect("a list").clone()
}

fn publish(dev: &DevProcess, channel: &str) -> (u16, String) {
    http(
        dev.addr,
        "POST",
        &format!("/v1/channels/{channel}/messages"),
        &dev.key,
        r#"{"name":"greeting","data":"hello"}"#,
    )
}

#[test]
fn deploy_list_publish_rollback_remove() {
    let component = passthrough();
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start(dir.path(), &[]).expect("tern dev starts");
    let edge = format!("http://{}", dev.addr);
    let file = component.to_str().expect("UTF-8 path");
    // From the dev dir: the key comes from ./.tern/dev-key.
    let cwd = dir.path();

    assert!(listed(cwd, &edge).is_empty());
    let ran = tern(
        cwd,
        &[
            "deploy",
            file,
            "--name",
            "passthrough",
            "--bind",
            "chat:*",
            "--edge",
            &edge,
        ],
    )
    .ok();
    assert!(
        ran.stdout
            .contains("function passthrough v1 deployed (bind chat:*, ingress) in "),
        "{}",
        ran.stdout
    );
    let functions = listed(cwd, &edge);
    assert_eq!(functions.len(), 1, "{functions:?}");
    assert_eq!(functions[0]["name"], "passthrough");
    assert_eq!(functions[0]["version"], 1);
    assert_eq!(functions[0]["bind"], serde_json::json!(["chat:*"]));
    assert_eq!(functions[0]["stage"], "ingress");
    assert_eq!(functions[0]["policy"], "fail-closed");

    // A bound channel goes through the function; another channel does not.
    let (status, body) = publish(&dev, "chat:1");
    assert_eq!(status, 201, "{body}");
    let (status, body) = publish(&dev, "news:1");
    assert_eq!(status, 201, "{body}");
    let functions = listed(cwd, &edge);
    assert_eq!(functions[0]["stats"]["invocations"], 1, "{functions:?}");
    assert_eq!(functions[0]["stats"]["passes"], 1, "{functions:?}");

    let table = tern(cwd, &["fn", "list", "--edge", &edge]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[1].starts_with("passthrough  v1"), "{table}");
    assert!(lines[1].contains("chat:*"), "{table}");

    // A second deploy of other bytes is v2, with other options.
    let v2 = dir.path().join("v2.wasm");
    let bytes = std::fs::read(component).expect("component");
    std::fs::write(&v2, with_custom_section(&bytes, b"v2")).expect("write");
    let ran = tern(
        cwd,
        &[
            "deploy",
            v2.to_str().expect("UTF-8"),
            "--name",
            "passthrough",
            "--bind",
            "chat:*",
            "--bind",
            "room:#",
            "--stage",
            "egress",
            "--policy",
            "fail-open",
            "--timeout",
            "5ms",
            "--memory",
            "8MiB",
            "--order",
            "-2",
            "--edge",
            &edge,
        ],
    )
    .ok();
    assert!(
        ran.stdout
            .contains("function passthrough v2 deployed (bind chat:* room:#, egress)"),
        "{}",
        ran.stdout
    );
    let functions = listed(cwd, &edge);
    assert_eq!(functions[0]["version"], 2);
    assert_eq!(functions[0]["stage"], "egress");
    assert_eq!(functions[0]["policy"], "fail-open");
    assert_eq!(functions[0]["timeout_us"], 5000);
    assert_eq!(functions[0]["memory_bytes"], 8 << 20);
    assert_eq!(functions[0]["order"], -2);
    assert_eq!(functions[0]["versions"], serde_json::json!([1, 2]));

    // Back to v1, as v3; to a version that never was: 404, exit 1.
    let ran = tern(
        cwd,
        &[
            "fn",
            "rollback",
            "passthrough",
            "--to",
            "1",
            "--edge",
            &edge,
        ],
    )
    .ok();
    assert!(
        ran.stdout
            .contains("function passthrough rolled back to v1: v3 in force"),
        "{}",
        ran.stdout
    );
    let functions = listed(cwd, &edge);
    assert_eq!(functions[0]["version"], 3);
    assert_eq!(functions[0]["stage"], "ingress");
    assert_eq!(functions[0]["bind"], serde_json::json!(["chat:*"]));
    let ran = tern(
        cwd,
        &[
            "fn",
            "rollback",
            "passthrough",
            "--to",
            "9",
            "--edge",
            &edge,
        ],
    )
    .fails();
    assert!(
        ran.stderr.contains("error: 40400 (NotFound): "),
        "{}",
        ran.stderr
    );
    // Without --to: the version before the one in force.
    let ran = tern(cwd, &["fn", "rollback", "passthrough", "--edge", &edge]).ok();
    assert!(ran.stdout.contains("v4 in force"), "{}", ran.stdout);

    let ran = tern(cwd, &["fn", "remove", "passthrough", "--edge", &edge]).ok();
    assert!(
        ran.stdout.contains("function passthrough removed in "),
        "{}",
        ran.stdout
    );
    assert!(listed(cwd, &edge).is_empty());
    let table = tern(cwd, &["fn", "list", "--edge", &edge]).ok().stdout;
    assert_eq!(table.trim(), "no functions on edge dev");
    let (status, body) = publish(&dev, "chat:1");
    assert_eq!(status, 201, "{body}");
    let ran = tern(cwd, &["fn", "remove", "passthrough", "--edge", &edge]).fails();
    assert!(
        ran.stderr.contains("error: 40400 (NotFound): "),
        "{}",
        ran.stderr
    );
}

#[test]
fn bad_components_keys_and_edges_exit_1_with_a_clear_line() {
    let component = passthrough();
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start(dir.path(), &[]).expect("tern dev starts");
    let edge = format!("http://{}", dev.addr);
    let cwd = dir.path();
    let deploy = |file: &Path, extra: &[&str]| {
        let mut args = vec![
            "deploy",
            file.to_str().expect("UTF-8"),
            "--name",
            "f",
            "--bind",
            "chat:*",
            "--edge",
            &edge,
        ];
        args.extend_from_slice(extra);
        tern(cwd, &args)
    };

    let random = dir.path().join("random.wasm");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, &noise).expect("write");
    let ran = deploy(&random, &[]).fails();
    assert!(
        ran.stderr.contains("not a WebAssembly file"),
        "{}",
        ran.stderr
    );

    // A component header over garbage gets past the CLI; the edge refuses it.
    let corrupt = dir.path().join("corrupt.wasm");
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.extend_from_slice(&noise);
    std::fs::write(&corrupt, &bytes).expect("write");
    let ran = deploy(&corrupt, &[]).fails();
    assert!(
        ran.stderr
            .contains("error: 40003 (InvalidValue): component refused"),
        "{}",
        ran.stderr
    );

    // A real component cut short.
    let truncated = dir.path().join("truncated.wasm");
    let whole = std::fs::read(component).expect("component");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).expect("write");
    let ran = deploy(&truncated, &[]).fails();
    assert!(ran.stderr.contains("component refused"), "{}", ran.stderr);

    let ran = deploy(&dir.path().join("missing.wasm"), &[]).fails();
    assert!(
        ran.stderr.contains("missing.wasm does not exist"),
        "{}",
        ran.stderr
    );

    let ran = deploy(component, &["--timeout", "5 parsecs"]).fails();
    assert!(ran.stderr.contains("invalid binding"), "{}", ran.stderr);
    assert!(ran.stderr.contains("timeout"), "{}", ran.stderr);
    // A flag clap refuses is a usage error: exit 2, like every tern command.
    let ran = deploy(component, &["--stage", "sideways"]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("expected `ingress` or `egress`"),
        "{}",
        ran.stderr
    );

    let ran = deploy(component, &["--key", "dev.local:not-the-secret-at-all"]).fails();
    assert!(ran.stderr.contains("error: 40101"), "{}", ran.stderr);
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let ran = tern(elsewhere.path(), &["fn", "list", "--edge", &edge]).fails();
    assert!(ran.stderr.contains("no admin key"), "{}", ran.stderr);

    // Nothing listens on a port just released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let ran = tern(
        cwd,
        &["fn", "list", "--edge", &format!("http://{closed_addr}")],
    )
    .fails();
    assert!(
        ran.stderr.contains("is `tern dev` running?"),
        "{}",
        ran.stderr
    );

    // None of it reached the edge's functions.
    assert!(listed(cwd, &edge).is_empty());
    let (status, body) = publish(&dev, "chat:1");
    assert_eq!(status, 201, "{body}");
}

#[test]
fn tern_dev_deploys_its_functions_dir_and_redeploys_on_change() {
    let component = std::fs::read(passthrough()).expect("component");
    let dir = tempfile::tempdir().expect("tempdir");
    let functions = dir.path().join("functions");
    let echo = functions.join("echo");
    std::fs::create_dir_all(&echo).expect("mkdir");
    std::fs::write(
        echo.join("Cargo.toml"),
        "[package]\nname = \"echo\"\nversion = \"0.1.0\"\n\n\
         [package.metadata.tern]\nbind = [\"chat:*\"]\npolicy = \"fail-open\"\n",
    )
    .expect("write");
    std::fs::write(functions.join("echo.wasm"), &component).expect("write");
    let plain = functions.join("plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    std::fs::write(
        plain.join("Cargo.toml"),
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\n",
    )
    .expect("write");
    let unbuilt = functions.join("unbuilt");
    std::fs::create_dir_all(&unbuilt).expect("mkdir");
    std::fs::write(
        unbuilt.join("Cargo.toml"),
        "[package]\nname = \"unbuilt\"\nversion = \"0.1.0\"\n\
         [package.metadata.tern]\nbind = [\"news:*\"]\n",
    )
    .expect("write");

    let dev = DevProcess::start(dir.path(), &[]).expect("tern dev starts");
    dev.wait_for_stdout(
        "function echo v1 deployed (bind chat:*, ingress)",
        LINE_TIMEOUT,
    )
    .expect("echo deployed");
    dev.wait_for_stdout("no [package.metadata.tern]", LINE_TIMEOUT)
        .expect("plain skipped with a note");
    dev.wait_for_stdout(
        "function unbuilt: no component yet; build it with `tern fn build",
        LINE_TIMEOUT,
    )
    .expect("a hint for unbuilt");
    let (status, body) = publish(&dev, "chat:1");
    assert_eq!(status, 201, "{body}");

    // New bytes: v2, once.
    let v2 = with_custom_section(&component, b"v2");
    let partial = functions.join(".echo.partial");
    std::fs::write(&partial, &v2).expect("write");
    std::fs::rename(&partial, functions.join("echo.wasm")).expect("rename");
    dev.wait_for_stdout("function echo v2 deployed", LINE_TIMEOUT)
        .expect("echo redeployed");

    // A binding change alone redeploys too.
    std::fs::write(
        echo.join("Cargo.toml"),
        "[package]\nname = \"echo\"\nversion = \"0.1.0\"\n\n\
         [package.metadata.tern]\nbind = [\"chat:*\", \"room:*\"]\n",
    )
    .expect("write");
    dev.wait_for_stdout(
        "function echo v3 deployed (bind chat:* room:*, ingress)",
        LINE_TIMEOUT,
    )
    .expect("echo rebound");
    let edge = format!("http://{}", dev.addr);
    let listed = listed(dir.path(), &edge);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["version"], 3);
    assert_eq!(listed[0]["policy"], "fail-closed");
    assert!(dev.terminate(), "SIGTERM exits 0");

    // The next start finds the same function in force and deploys nothing.
    let dev = DevProcess::start(dir.path(), &[]).expect("tern dev restarts");
    dev.wait_for_stdout("function echo v3 is up to date", LINE_TIMEOUT)
        .expect("nothing to deploy");
    let stdout = dev.stdout_text();
    assert!(!stdout.contains("deployed ("), "{stdout}");
}

/// The Debian route of `tern fn build` (DESIGN.md section 7): with `RUSTC` set to
/// Debian's `rustc-web`, which has no precompiled wasm32 library, the build compiles
/// the standard library from `rust-web-src` and links with `wasm-ld-19`; the
/// profanity filter built that way is deployed and rejects a message on a real edge.
/// Skipped when the three packages are missing (`scripts/setup.sh` installs them).
#[test]
fn fn_build_takes_the_debian_route_without_rustups_target() {
    let needed = [
        "/usr/bin/rustc",
        "/usr/lib/rustlib/src/rust/library",
        "/usr/bin/wasm-ld-19",
    ];
    if let Some(missing) = needed.iter().find(|path| !Path::new(path).exists()) {
        eprintln!("skipped: {missing} is missing (apt-get install rustc-web rust-web-src lld-19)");
        return;
    }
    let root = workspace();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-debian");
    let crate_dir = root.join("functions").join("profanity");
    let ran = tern_with_env(
        &root,
        &[
            "fn",
            "build",
            crate_dir.to_str().expect("UTF-8 path"),
            "--target-dir",
            target.to_str().expect("UTF-8 path"),
        ],
        &[("RUSTC", "/usr/bin/rustc")],
    )
    .ok();
    assert!(
        ran.stderr
            .contains("Debian rustc-web (/usr/bin/rustc) with -Zbuild-std"),
        "{}",
        ran.stderr
    );
    let component = target.join("tern-fn/profanity.wasm");
    assert!(ran.stdout.starts_with("built "), "{}", ran.stdout);

    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start(dir.path(), &[]).expect("tern dev starts");
    let edge = format!("http://{}", dev.addr);
    tern(
        dir.path(),
        &[
            "deploy",
            component.to_str().expect("UTF-8 path"),
            "--name",
            "profanity",
            "--bind",
            "debian:*",
            "--edge",
            &edge,
        ],
    )
    .ok();
    let (status, body) = publish(&dev, "debian:1");
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(
        dev.addr,
        "POST",
        "/v1/channels/debian:1/messages",
        &dev.key,
        r#"{"data":"well damn"}"#,
    );
    assert_ne!(status, 201, "{body}");
    assert!(
        body.contains("42200") && body.contains("damn"),
        "{status} {body}"
    );
}
