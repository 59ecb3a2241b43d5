//! Passes nginx's configure results (from nginx-sys) to our code as cfgs, so
//! that fields such as `r->stream` (HTTP/2) are used only when nginx has them.
//! This needs `nginx-sys` as a direct dependency: cargo hands `DEP_NGINX_*`
//! only to direct dependents of a `links` crate.

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        std::env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or("any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = std::env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    // `nginx1_23_0`: ngx_table_elt_t has `next` (header lists), 1.23.0+.
    println!("cargo::rustc-check-cfg=cfg(nginx1_23_0)");
    if let Ok(v) = std::env::var("DEP_NGINX_VERSION_NUMBER") {
        println!("cargo::rustc-env=WSGI_NGINX_VERSION_NUMBER={v}");
        if v.parse::<u64>().is_ok_and(|v| v >= 1_023_000) {
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
