"""The ``nginx`` image: the stock welcome page on port 80, with nginx's start-up and access log lines.

``kubectl run nginx --image=nginx`` gives a pod that answers ``curl http://<pod IP>/`` (and through a Service)
with "Welcome to nginx!", as the real image does with its default configuration. Given another command
(``kubectl run n --image=nginx -- sleep 60``), the image runs that instead.
"""

from __future__ import annotations

import os
import time

from labkit.sandbox.images import runtime

VERSION = "1.29.3"
PORT = 80

WELCOME = b"""<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""

NOT_FOUND = f"""<html>
<head><title>404 Not Found</title></head>
<body>
<center><h1>404 Not Found</h1></center>
<hr><center>nginx/{VERSION}</center>
</body>
</html>
""".encode()

_LAST_MODIFIED = "Tue, 28 Oct 2025 12:05:10 GMT"


class NginxHandler(runtime.Handler):
    """The default server block: ``/`` and ``/index.html`` give the welcome page, anything else a 404."""

    server_header = f"nginx/{VERSION}"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            status, body = 200, WELCOME
            headers = [("Content-Type", "text/html"), ("Last-Modified", _LAST_MODIFIED),
                       ("Connection", "keep-alive"), ("ETag", '"6900b1d6-267"'), ("Accept-Ranges", "bytes")]
        else:
            status, body = 404, NOT_FOUND
            headers = [("Content-Type", "text/html"), ("Connection", "keep-alive")]
        self.reply(status, body, headers)
        agent = self.headers.get("User-Agent", "-")
        runtime.log(f'{self.client_ip} - - [{time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())}] '
                    f'"{self.requestline}" {status} {len(body)} "-" "{agent}" "-"')

    do_HEAD = do_GET


def _startup_log() -> None:
    for line in (
        "/docker-entrypoint.sh: /docker-entrypoint.d/ is not empty, will attempt to perform configuration",
        "/docker-entrypoint.sh: Looking for shell scripts in /docker-entrypoint.d/",
        "/docker-entrypoint.sh: Configuration complete; ready for start up",
    ):
        runtime.log(line)
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime())
    pid = os.getpid()
    for line in ("using the \"epoll\" event method", f"nginx/{VERSION}", "start worker processes"):
        runtime.log_error(f"{stamp} [notice] {pid}#{pid}: {line}")


def main(argv: list[str]) -> int:
    """Serve the welcome page (``nginx -g 'daemon off;'``), or run the command the manifest gives.

    Args:
        argv: The container's command line.

    Returns:
        The exit code (a serving nginx never returns).
    """
    if argv and os.path.basename(argv[0]) != "nginx":
        return runtime.run_command(argv)
    return runtime.serve(NginxHandler, PORT, program="nginx", on_listen=_startup_log)
