# ngx_http_wsgi_module: the Makefile rule that builds the Rust crate (see
# config). cargo tracks the Rust sources and dependencies itself, so make
# runs it every time and cargo decides whether anything is to be done.

cat << END                                                    >> $NGX_MAKEFILE

$ngx_wsgi_lib: .NGX_WSGI_CARGO
	NGINX_SOURCE_DIR="$ngx_wsgi_srcdir" NGINX_BUILD_DIR="$ngx_wsgi_objs" \\
	PYO3_PYTHON="$ngx_wsgi_python" \\
	"$NGX_CARGO" rustc --release --locked --lib --crate-type staticlib \\
		--manifest-path "$ngx_addon_dir/Cargo.toml" --no-default-features \\
		--target-dir "$ngx_wsgi_target" \$(NGX_WSGI_CARGO_OPT)

.NGX_WSGI_CARGO:

END

if [ "$ngx_wsgi_link" = DYNAMIC ]; then
    cat << END                                                >> $NGX_MAKEFILE
$NGX_OBJS${ngx_dirsep}ngx_http_wsgi_module$ngx_modext:	$ngx_wsgi_lib

END
fi
