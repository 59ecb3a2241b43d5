//! `wsgi_python_home`'s check: the directory must be a virtualenv or a
//! prefix of the Python this module embeds.

/// "3.11" for the libpython this module is linked with.
pub fn embedded_python_version() -> String {
    wsgi_pool::python::embedded_version()
}

/// The embedded Python's library directory name under a prefix or a venv's
/// `lib/`: "python3.11", "python3.14t" for a free-threaded build, as its
/// `sysconfig` said at build time (`WSGI_PYTHON_STDLIB`, python_paths.rs).
pub fn stdlib_dir_name(version: &str) -> String {
    option_env!("WSGI_PYTHON_STDLIB")
        .and_then(|p| std::path::Path::new(p).file_name()?.to_str())
        .filter(|n| n.starts_with("python"))
        .map_or_else(|| format!("python{version}"), str::to_string)
}

/// A home must be a virtualenv (`pyvenv.cfg`) of the embedded Python's
/// version, or a prefix with that version's standard library (`lib/` +
/// `lib_name`, which tells a free-threaded build's `python3.14t` from
/// `python3.14`); otherwise the worker's Python cannot start (or imports
/// nothing from it), and its own error ("No module named 'encodings'")
/// does not say why.
pub fn check_python_home(dir: &str, version: &str, lib_name: &str) -> Result<(), String> {
    let home = std::path::Path::new(dir);
    if !home.is_dir() {
        return Err("is not a directory".into());
    }
    if let Ok(cfg) = std::fs::read_to_string(home.join("pyvenv.cfg")) {
        // venv writes "version", virtualenv and uv "version_info".
        let venv_version = cfg.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            matches!(k.trim(), "version" | "version_info").then(|| v.trim().to_string())
        });
        return match venv_version {
            Some(v) if v != version && !v.starts_with(&format!("{version}.")) => Err(format!(
                "is a virtualenv of Python {v}, but this module embeds Python {version}"
            )),
            // Same version, the other build (a free-threaded Python's
            // packages live in lib/python3.14t, the GIL one's in python3.14)
            _ if !home.join("lib").join(lib_name).is_dir()
                && home.join("lib").join(format!("python{version}t")).is_dir()
                    != (lib_name == format!("python{version}t")) =>
            {
                Err(format!(
                    "is a virtualenv of another build of Python {version} (no lib/{lib_name}): \
                     this module embeds a{} build",
                    if lib_name.ends_with('t') {
                        " free-threaded"
                    } else {
                        " GIL"
                    }
                ))
            }
            _ => Ok(()),
        };
    }
    if !home.join("lib").join(lib_name).is_dir() {
        return Err(format!(
            "is neither a virtualenv (no pyvenv.cfg) nor a Python {version} prefix (no lib/{lib_name})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_python_home;
    use std::fs;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ngx-wsgi-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn python_home_must_match_the_embedded_python() {
        let d = scratch("homes");
        let s = |p: &std::path::Path| p.to_str().unwrap().to_string();

        let missing = d.join("missing");
        assert_eq!(
            check_python_home(&s(&missing), "3.11", "python3.11"),
            Err("is not a directory".to_string())
        );

        let venv = d.join("venv");
        fs::create_dir(&venv).unwrap();
        fs::write(
            venv.join("pyvenv.cfg"),
            "home = /usr/bin\nversion = 3.11.2\n",
        )
        .unwrap();
        assert_eq!(check_python_home(&s(&venv), "3.11", "python3.11"), Ok(()));
        let err = check_python_home(&s(&venv), "3.1", "python3.1").unwrap_err();
        assert!(err.contains("virtualenv of Python 3.11.2"), "{err}");

        let uv = d.join("uv");
        fs::create_dir(&uv).unwrap();
        fs::write(uv.join("pyvenv.cfg"), "version_info = 3.12.1\n").unwrap();
        let err = check_python_home(&s(&uv), "3.11", "python3.11").unwrap_err();
        assert!(err.contains("virtualenv of Python 3.12.1, but this module embeds Python 3.11"));

        let prefix = d.join("prefix");
        fs::create_dir_all(prefix.join("lib/python3.11")).unwrap();
        assert_eq!(check_python_home(&s(&prefix), "3.11", "python3.11"), Ok(()));
        let err = check_python_home(&s(&prefix), "3.12", "python3.12").unwrap_err();
        assert!(err.contains("nor a Python 3.12 prefix"), "{err}");

        // a free-threaded build: lib/python3.14t, in a prefix and a venv
        let ft = d.join("ft");
        fs::create_dir_all(ft.join("lib/python3.14t")).unwrap();
        assert_eq!(check_python_home(&s(&ft), "3.14", "python3.14t"), Ok(()));
        let err = check_python_home(&s(&ft), "3.14", "python3.14").unwrap_err();
        assert!(err.contains("(no lib/python3.14)"), "{err}");
        let ft_venv = d.join("ft-venv");
        fs::create_dir_all(ft_venv.join("lib/python3.14t/site-packages")).unwrap();
        fs::write(ft_venv.join("pyvenv.cfg"), "version = 3.14.7\n").unwrap();
        assert_eq!(
            check_python_home(&s(&ft_venv), "3.14", "python3.14t"),
            Ok(())
        );
        let err = check_python_home(&s(&ft_venv), "3.14", "python3.14").unwrap_err();
        assert!(err.contains("another build of Python 3.14"), "{err}");
        assert!(err.contains("embeds a GIL build"), "{err}");
        let gil_venv = d.join("gil-venv");
        fs::create_dir_all(gil_venv.join("lib/python3.14/site-packages")).unwrap();
        fs::write(gil_venv.join("pyvenv.cfg"), "version = 3.14.7\n").unwrap();
        let err = check_python_home(&s(&gil_venv), "3.14", "python3.14t").unwrap_err();
        assert!(err.contains("embeds a free-threaded build"), "{err}");
        assert_eq!(
            check_python_home(&s(&gil_venv), "3.14", "python3.14"),
            Ok(())
        );

        fs::remove_dir_all(&d).unwrap();
    }
}
