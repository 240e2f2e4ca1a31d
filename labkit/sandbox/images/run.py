"""A container's main program: ``python -m labkit.sandbox.images.run <image> [argv...]``.

``<image>`` is an :class:`~labkit.sandbox.images.ImageSpec` name (``details``, ``ratings``, ``reviews``,
``productpage`` or ``curl``); ``argv`` is the container's command line, which the image's ``main`` interprets
the way the real image would (``ruby details.rb 9080``, ``sleep infinity``, ...). The process exits with
``main``'s return code.
"""

import sys

# Thirteen containers run at once and none of them speaks TLS, yet http.client and hmac load OpenSSL, which
# costs about 4 MB of resident memory per process. Marking the modules absent before anything imports them
# makes http.client skip HTTPS support and hashlib/hmac fall back to their built-in implementations. This is
# done here, in the container entry point only, never in a module a notebook or test could import.
sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
sys.modules.setdefault("_hashlib", None)  # type: ignore[arg-type]

import importlib  # noqa: E402 - must follow the OpenSSL opt-out above

from labkit.sandbox.images import runtime  # noqa: E402

_IMAGES = ("details", "ratings", "reviews", "productpage", "curl")


def main(args: list[str]) -> int:
    """Set the process up as a container, then run the image's program.

    Args:
        args: ``[image, *argv]``.

    Returns:
        The program's exit code.
    """
    runtime.setup()
    if not args or args[0] not in _IMAGES:
        runtime.log_error(f"usage: python -m labkit.sandbox.images.run {{{','.join(_IMAGES)}}} [argv...]")
        return 2
    program = importlib.import_module(f"labkit.sandbox.images.{args[0]}")
    return int(program.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
