//! Build script:
//!
//! 1. passes nginx's configure results (from nginx-sys) to our code as cfgs,
//!    so that fields such as `r->stream` (HTTP/2) are used only when nginx
//!    has them. This needs `nginx-sys` as a direct dependency: cargo hands
//!    `DEP_NGINX_*` only to direct dependents of a `links` crate;
//! 2. compiles, with nginx's own headers and defines, the C half of
//!    `src/fields.rs`: accessors for every bitfield in `src/fields.list` and
//!    `src/shim.c` (nginx's inline timer and posted-event helpers);
//! 3. asks the C compiler where every plain member in `src/fields.list`
//!    lies, and turns the answers into compile-time assertions against
//!    nginx-sys's bindings: a layout that bindgen got wrong fails the build
//!    with the member's name instead of crashing a worker.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    nginx_cfgs();
    fields();
}

fn nginx_cfgs() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or("any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    // `nginx1_23_0`: ngx_table_elt_t has `next` (header lists), 1.23.0+.
    println!("cargo::rustc-check-cfg=cfg(nginx1_23_0)");
    if let Some(v) = nginx_version() {
        println!("cargo::rustc-env=WSGI_NGINX_VERSION_NUMBER={v}");
        if v >= 1_023_000 {
            println!("cargo::rustc-cfg=nginx1_23_0");
        }
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    python_paths();
}

/// Where the embedded Python (`PYO3_PYTHON`, as pyo3 picks it) keeps its
/// files, from its own `sysconfig`:
/// * an rpath to its `LIBDIR` when that is outside the system library path
///   (pyenv, `/opt`), so that `load_module` (and `cargo test`'s binaries)
///   find libpython without `LD_LIBRARY_PATH`, as `config` does for
///   nginx's own build;
/// * `WSGI_PYTHON_STDLIB`, its standard library, which `nginx -t` checks
///   the workers' user can read (`conf::check_python_readable`).
fn python_paths() {
    println!("cargo::rerun-if-env-changed=PYO3_PYTHON");
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = "import sysconfig as s\n\
                  print(s.get_config_var('LIBDIR') or '')\n\
                  print(s.get_path('stdlib') or '')";
    let out = match std::process::Command::new(&python)
        .args(["-c", script])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        // pyo3's own build script reports a missing or broken interpreter.
        _ => return,
    };
    let mut lines = out.lines();
    let (libdir, stdlib) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let system = ["/usr/lib", "/usr/lib64", "/lib", "/lib64"];
    let in_system_path = system
        .iter()
        .any(|d| libdir == *d || libdir.starts_with(&format!("{d}/")));
    if !libdir.is_empty() && !in_system_path {
        // rustc-link-arg reaches the cdylib and the test binaries alike.
        println!("cargo::rustc-link-arg=-Wl,-rpath,{libdir}");
    }
    println!("cargo::rustc-env=WSGI_PYTHON_STDLIB={stdlib}");
}

fn nginx_version() -> Option<u64> {
    env::var("DEP_NGINX_VERSION_NUMBER").ok()?.parse().ok()
}

/// One line of `src/fields.list`.
enum Entry {
    /// A bitfield: `module`, C type, member.
    Bit(String, String, String),
    /// A plain member: C type, member.
    Field(String, String),
    /// A struct whose size matters: C type.
    Size(String),
}

fn parse_list(text: &str) -> Vec<Entry> {
    let version = nginx_version().unwrap_or(u64::MAX);
    let features: Vec<String> = env::var("DEP_NGINX_FEATURES")
        .unwrap_or_default()
        .split(',')
        .map(|f| f.trim().to_string())
        .collect();
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words: Vec<&str> = line.split_whitespace().collect();
        // Optional last words: `>=NNNNNNN`, only from that nginx version on;
        // `?feature`, only when nginx was configured with it (`?http_v2`).
        let mut wanted = true;
        while let Some(w) = words.last() {
            if let Some(v) = w.strip_prefix(">=") {
                wanted &= v.parse::<u64>().expect("version number") <= version;
            } else if let Some(f) = w.strip_prefix('?') {
                wanted &= features.iter().any(|have| have == f);
            } else {
                break;
            }
            words.pop();
        }
        if !wanted {
            continue;
        }
        let s = |i: usize| words[i].to_string();
        entries.push(match (words.first().copied(), words.len()) {
            (Some("bit"), 4) => Entry::Bit(s(1), s(2), s(3)),
            (Some("field"), 3) => Entry::Field(s(1), s(2)),
            (Some("size"), 2) => Entry::Size(s(1)),
            _ => panic!("src/fields.list:{}: cannot parse {line:?}", n + 1),
        });
    }
    entries
}

const C_PRELUDE: &str = "\
/* Generated by build.rs from src/fields.list. */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
";

fn fields() {
    println!("cargo::rerun-if-changed=src/fields.list");
    println!("cargo::rerun-if-changed=src/shim.c");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_INCLUDE");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_CFLAGS");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let list = fs::read_to_string("src/fields.list").expect("src/fields.list");
    let entries = parse_list(&list);

    let includes: Vec<PathBuf> = env::var_os("DEP_NGINX_INCLUDE")
        .map(|v| env::split_paths(&v).collect())
        .unwrap_or_default();
    let defines: Vec<String> = env::var("DEP_NGINX_CFLAGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if includes.is_empty() {
        panic!("nginx-sys gave no include directories (DEP_NGINX_INCLUDE)");
    }

    // The accessors, compiled into the module with src/shim.c.
    let mut c = String::from(C_PRELUDE);
    let mut rs = String::from("// Generated by build.rs from src/fields.list.\n");
    let mut modules: Vec<(String, String)> = Vec::new();
    for e in &entries {
        let Entry::Bit(module, ty, member) = e else {
            continue;
        };
        let get = format!("ngx_http_wsgi_get_{module}_{member}");
        let set = format!("ngx_http_wsgi_set_{module}_{member}");
        writeln!(
            c,
            "unsigned {get}(const {ty} *p) {{ return p->{member}; }}\n\
             void {set}({ty} *p, unsigned v) {{ p->{member} = v; }}"
        )
        .unwrap();
        let body = match modules.iter_mut().find(|(m, _)| m == module) {
            Some((_, body)) => body,
            None => {
                modules.push((module.clone(), String::new()));
                &mut modules.last_mut().unwrap().1
            }
        };
        writeln!(
            body,
            "    unsafe extern \"C\" {{
        fn {get}(p: *const nginx_sys::{ty}) -> c_uint;
        fn {set}(p: *mut nginx_sys::{ty}, v: c_uint);
    }}
    /// `{ty}.{member}`, read by C.
    ///
    /// # Safety
    /// `p` must point to a live `{ty}`.
    #[inline]
    pub unsafe fn {member}(p: *const nginx_sys::{ty}) -> c_uint {{
        // SAFETY: the caller's promise; C reads the bitfield where C put it.
        unsafe {{ {get}(p) }}
    }}
    /// Sets `{ty}.{member}` (C truncates `v` to the field's width).
    ///
    /// # Safety
    /// `p` must point to a live `{ty}` that no one else is using right now.
    #[inline]
    pub unsafe fn set_{member}(p: *mut nginx_sys::{ty}, v: c_uint) {{
        // SAFETY: the caller's promise; C writes the bitfield where C put it.
        unsafe {{ {set}(p, v) }}
    }}"
        )
        .unwrap();
    }
    for (module, body) in &modules {
        writeln!(
            rs,
            "/// Bitfields of one nginx struct (a getter and a setter each).\n#[allow(dead_code)]\npub mod {module} {{\n    use core::ffi::c_uint;\n{body}}}"
        )
        .unwrap();
    }

    // The layout probe: where C puts each plain member and how big each
    // listed struct is. Built and run on the build machine.
    let mut probe = String::from(C_PRELUDE);
    probe.push_str("#include <stdio.h>\nint main(void) {\n");
    for e in &entries {
        match e {
            Entry::Field(ty, member) => writeln!(
                probe,
                "    printf(\"field {ty} {member} %zu\\n\", offsetof({ty}, {member}));"
            )
            .unwrap(),
            Entry::Size(ty) => {
                writeln!(probe, "    printf(\"size {ty} %zu\\n\", sizeof({ty}));").unwrap()
            }
            Entry::Bit(..) => {}
        }
    }
    probe.push_str("    return 0;\n}\n");
    let layout = run_probe(&out, &probe, &includes, &defines);
    rs.push_str("\n// The C compiler's layout, checked against nginx-sys's bindings.\n");
    for line in layout.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["field", ty, member, n] => writeln!(
                rs,
                "const _: () = assert!(core::mem::offset_of!(nginx_sys::{ty}, {member}) == {n}, \
                 \"nginx layout: C puts {ty}.{member} at byte {n}, nginx-sys's bindings do not\");"
            )
            .unwrap(),
            ["size", ty, n] => writeln!(
                rs,
                "const _: () = assert!(core::mem::size_of::<nginx_sys::{ty}>() == {n}, \
                 \"nginx layout: C's {ty} is {n} bytes, nginx-sys's is not\");"
            )
            .unwrap(),
            _ => panic!("unexpected layout probe output: {line:?}"),
        }
    }
    fs::write(out.join("fields.rs"), rs).expect("write fields.rs");

    let accessors = out.join("fields.c");
    fs::write(&accessors, c).expect("write fields.c");
    let mut build = cc::Build::new();
    build
        .file(&accessors)
        .file("src/shim.c")
        .includes(&includes)
        .warnings(false);
    for d in &defines {
        build.flag(d);
    }
    build.compile("ngx_http_wsgi_c");
}

/// Compiles and runs the layout probe; returns what it printed.
fn run_probe(out: &Path, source: &str, includes: &[PathBuf], defines: &[String]) -> String {
    let src = out.join("layout_probe.c");
    let exe = out.join("layout_probe");
    fs::write(&src, source).expect("write layout_probe.c");
    if env::var("HOST").ok() != env::var("TARGET").ok() {
        panic!(
            "the nginx layout probe must run on the build machine: cross builds are not supported"
        );
    }
    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    let mut cmd = compiler.to_command();
    for i in includes {
        cmd.arg("-I").arg(i);
    }
    cmd.args(defines).arg(&src).arg("-o").arg(&exe);
    let status = cmd
        .status()
        .expect("run the C compiler for the layout probe");
    assert!(status.success(), "compiling {} failed", src.display());
    let run = Command::new(&exe).output().expect("run the layout probe");
    assert!(run.status.success(), "the layout probe failed");
    String::from_utf8(run.stdout).expect("layout probe output")
}
