"""The ``curlimages/curl`` image: the tester pod of the lesson (``sleep``/``curl`` samples).

Its main process is whatever the manifest asks for. The samples run ``/bin/sleep infinity`` (``3650d`` in
older releases) and the lesson then ``kubectl exec``s curl inside it. Without a command the image runs
``curl`` with no URL, which prints a hint and exits 2, so such a pod crash-loops, as the real one does. Other
commands run from the sandbox's exec toolbox (``curl -sS http://ratings:9080/ratings/7`` as a one-shot pod
works); a command the image lacks fails with exit code 127.
"""

from __future__ import annotations

import os

from labkit.sandbox.images import runtime


def main(argv: list[str]) -> int:
    """Run the container's command.

    Args:
        argv: The container's command line. A first word starting with ``-`` is an argument list for curl, as
        the
            image's entrypoint script treats it.

    Returns:
        The command's exit code (``sleep infinity`` never returns).
    """
    if argv and argv[0].startswith("-"):
        argv = ["curl", *argv]
    if len(argv) == 1 and os.path.basename(argv[0]) == "curl":
        runtime.log_error("curl: try 'curl --help' for more information")
        return 2
    return runtime.run_command(argv)
