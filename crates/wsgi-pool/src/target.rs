//! `wsgi_pass` targets: `package.module:callable`, `/path/app.py`,
//! `/path/app.py:callable`. Pure parsing, shared by both sides.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// An importable dotted module name.
    Module(String),
    /// A Python file loaded by path.
    File(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTarget {
    pub source: AppSource,
    /// Dotted attribute path inside the module (`application` by default).
    pub callable: String,
}

/// What is wrong with a `wsgi_pass` target; shown after
/// `invalid "wsgi_pass" target: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    Empty,
    /// A path that names neither a `.py` nor a `.wsgi` file.
    NotAScript {
        spec: String,
    },
    BadModule {
        module: String,
        spec: String,
    },
    BadCallable {
        callable: String,
        spec: String,
    },
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetError::Empty => write!(f, "empty target"),
            TargetError::NotAScript { spec } => write!(
                f,
                "\"{spec}\" is neither \"module:callable\" nor a path to a .py or .wsgi file"
            ),
            TargetError::BadModule { module, spec } => write!(
                f,
                "invalid module name \"{module}\" in \"{spec}\" (expected \"package.module:callable\" or a path to a .py file)"
            ),
            TargetError::BadCallable { callable, spec } => {
                write!(f, "invalid callable name \"{callable}\" in \"{spec}\"")
            }
        }
    }
}

impl std::error::Error for TargetError {}

impl AppTarget {
    /// What `load_app.py`'s `load_app` takes: the kind ("module" or
    /// "file"), the module or file, the callable's dotted path, and the
    /// module name a file target is run as (unique per path).
    pub fn load_args(&self) -> [&str; 3] {
        match &self.source {
            AppSource::Module(m) => ["module", m, &self.callable],
            AppSource::File(f) => ["file", f, &self.callable],
        }
    }

    /// The module name a file target runs as: `_wsgi_file_<stem>_<hash>`.
    pub fn module_name(&self) -> String {
        let AppSource::File(path) = &self.source else {
            return String::new();
        };
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut h);
        let stem: String = std::path::Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("_wsgi_file_{stem}_{:x}", h.finish())
    }
}

impl fmt::Display for AppTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            AppSource::Module(m) => write!(f, "{}:{}", m, self.callable),
            AppSource::File(p) => write!(f, "{}:{}", p, self.callable),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn is_dotted(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

impl AppTarget {
    /// Parses a `wsgi_pass` argument; the error says what is wrong with it.
    pub fn parse(spec: &str) -> Result<AppTarget, TargetError> {
        if spec.is_empty() {
            return Err(TargetError::Empty);
        }
        // A Python file: `.py`, or a `.wsgi` script as mod_wsgi and uWSGI
        // load them (given as a path: "app:factory.wsgi" is a module's
        // dotted callable).
        let is_script = |p: &str| p.ends_with(".py") || p.ends_with(".wsgi");
        let is_path = spec.starts_with('/') || spec.starts_with("./") || spec.ends_with(".py");
        if is_path {
            // A path may hold ':' itself; only a final ":identifier" after
            // the ".py" or ".wsgi" names the callable.
            let (path, callable) = match spec.rsplit_once(':') {
                Some((p, c)) if is_script(p) => (p, c),
                _ => (spec, "application"),
            };
            if !is_script(path) {
                return Err(TargetError::NotAScript { spec: spec.into() });
            }
            if !is_dotted(callable) {
                return Err(TargetError::BadCallable {
                    callable: callable.into(),
                    spec: spec.into(),
                });
            }
            return Ok(AppTarget {
                source: AppSource::File(path.to_string()),
                callable: callable.to_string(),
            });
        }
        let (module, callable) = spec.split_once(':').unwrap_or((spec, "application"));
        if !is_dotted(module) {
            return Err(TargetError::BadModule {
                module: module.into(),
                spec: spec.into(),
            });
        }
        if !is_dotted(callable) {
            return Err(TargetError::BadCallable {
                callable: callable.into(),
                spec: spec.into(),
            });
        }
        Ok(AppTarget {
            source: AppSource::Module(module.to_string()),
            callable: callable.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_and_callable() {
        let t = AppTarget::parse("myproject.wsgi:application").unwrap();
        assert_eq!(t.source, AppSource::Module("myproject.wsgi".into()));
        assert_eq!(t.callable, "application");
        let t = AppTarget::parse("app:create_app.wsgi").unwrap();
        assert_eq!(t.callable, "create_app.wsgi");
    }

    #[test]
    fn module_defaults_to_application() {
        let t = AppTarget::parse("hello").unwrap();
        assert_eq!(t.callable, "application");
    }

    #[test]
    fn file_paths() {
        let t = AppTarget::parse("/srv/app.py").unwrap();
        assert_eq!(t.source, AppSource::File("/srv/app.py".into()));
        assert_eq!(t.callable, "application");
        let t = AppTarget::parse("/srv/app.py:app").unwrap();
        assert_eq!(t.source, AppSource::File("/srv/app.py".into()));
        assert_eq!(t.callable, "app");
        let t = AppTarget::parse("/srv/we:ird/app.py").unwrap();
        assert_eq!(t.source, AppSource::File("/srv/we:ird/app.py".into()));
        let t = AppTarget::parse("/srv/hg/hgweb.wsgi").unwrap();
        assert_eq!(t.source, AppSource::File("/srv/hg/hgweb.wsgi".into()));
        assert_eq!(t.callable, "application");
        let t = AppTarget::parse("/srv/hg/hgweb.wsgi:app").unwrap();
        assert_eq!(t.callable, "app");
    }

    #[test]
    fn rejects_garbage() {
        assert!(AppTarget::parse("").is_err());
        assert!(AppTarget::parse("my-project.wsgi:app").is_err());
        assert!(AppTarget::parse("mod:").is_err());
        assert!(AppTarget::parse("mod:1app").is_err());
        assert!(AppTarget::parse("/srv/app.txt").is_err());
        assert!(AppTarget::parse("/srv/app.py:bad-name").is_err());
        assert!(AppTarget::parse("a..b:app").is_err());
    }
}
