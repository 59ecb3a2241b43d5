// Included by build.rs and crates/wsgi-pool/build.rs.

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
