"""The ``busybox`` image: no server, just a shell and its tools.

The image's CMD is ``sh``; with no terminal on stdin the shell reads end-of-file and exits 0 at once, so a bare
``kubectl run b --image=busybox`` completes and crash-loops, as on a real cluster. ``kubectl run b --image=busybox
-- sleep 3600`` runs ``sleep 3600``; any other command comes from the sandbox's exec toolbox, and a command the
toolbox lacks fails with exit code 127 and the container runtime's message.
"""

from __future__ import annotations

from labkit.sandbox.images import runtime


def main(argv: list[str]) -> int:
    """Run the container's command (``sh`` when the manifest gives none).

    Args:
        argv: The container's command line.

    Returns:
        The command's exit code.
    """
    return runtime.run_command(argv or ["sh"])
