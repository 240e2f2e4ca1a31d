"""A container's main program: ``python -m labkit.sandbox.images.run <image> [argv...]``.

``<image>`` is an :class:`~labkit.sandbox.images.ImageSpec` name (``details``, ``ratings``, ``reviews``,
``productpage`` or ``curl``); ``argv`` is the container's command line, which the image's ``main`` interprets
the way the real image would (``ruby details.rb 9080``, ``sleep infinity``, ...). The process exits with
``main``'s return code.
"""

from __future__ import annotations

import importlib
import sys

IMAGES = ("details", "ratings", "reviews", "productpage", "curl", "istio_proxy")


def _skip_openssl() -> None:
    """Keep OpenSSL out of this process.

    Thirteen containers run at once and none of them speaks TLS, yet http.client and hmac load OpenSSL, about
    4 MB of resident memory per process. With the modules marked absent, http.client leaves out HTTPS support
    and hashlib/hmac use their built-in implementations. Only the container entry point does this: importing
    this module elsewhere (a notebook, pytest, a doc tool) changes nothing.
    """
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    sys.modules.setdefault("_hashlib", None)  # type: ignore[arg-type]


def main(args: list[str]) -> int:
    """Set the process up as a container, then run the image's program.

    Args:
        args: ``[image, *argv]``.

    Returns:
        The program's exit code.
    """
    from labkit.sandbox.images import runtime

    runtime.setup()
    if not args or args[0] not in IMAGES:
        runtime.log_error(f"usage: python -m labkit.sandbox.images.run {{{','.join(IMAGES)}}} [argv...]")
        return 2
    program = importlib.import_module(f"labkit.sandbox.images.{args[0]}")
    return int(program.main(args[1:]))


if __name__ == "__main__":
    _skip_openssl()
    sys.exit(main(sys.argv[1:]))
