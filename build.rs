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
}
