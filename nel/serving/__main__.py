"""``python -m nel.serving MODEL [--port N] [--host 127.0.0.1]``: see nel.serving.server.serve_main."""

from nel.serving.server import serve_main

if __name__ == "__main__":
    raise SystemExit(serve_main())
