"""The container images the sandbox can "pull": Bookinfo's four services and the curl tester.

A container in the sandbox is a local process. The kubelet looks the pod's ``image`` up with
:func:`match_image`, then starts ``python -m labkit.sandbox.images.run <spec.name> <argv...>``, where ``argv``
is the container's ``command`` + ``args`` or, when the manifest gives none, the image's
:attr:`ImageSpec.default_command`.

Example:
    >>> spec = match_image("registry.istio.io/release/examples-bookinfo-reviews-v3:1.20.3")
    >>> spec.name, spec.env["STAR_COLOR"]
    ('reviews', 'red')
    >>> process_name_for(spec, list(spec.default_command))
    'java'
    >>> match_image("docker.io/library/nginx:1.27") is None
    True

This module is imported by every container process (it is the parent package of ``run``), so it stays small
and uses the standard library only.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

__all__ = ["ImageSpec", "match_image", "process_name_for"]


@dataclass(frozen=True)
class ImageSpec:
    """What the sandbox knows about one container image.

    Attributes:
        name: The program family, which is also the module under ``labkit.sandbox.images`` that runs it:
            ``details``, ``ratings``, ``reviews``, ``productpage`` or ``curl``.
        module: The dotted module path of that program.
        process_name: The command name (``/proc/<pid>/comm``) the real image's main process shows, so that
            ``pkill ruby`` finds details. For the curl image it depends on the command; see
            :func:`process_name_for`.
        default_command: The image's ENTRYPOINT + CMD, used when the manifest gives no ``command``/``args``.
        env: The image's ENV defaults; the manifest's env is merged over them.
        ports: The ports the program listens on (informational, like ``EXPOSE``).
    """

    name: str
    module: str
    process_name: str
    default_command: tuple[str, ...]
    env: dict[str, str]
    ports: tuple[int, ...]


_BOOKINFO_PORT = 9080

# Commands the runtime provides in every image (see runtime.run_command); a container running one of them
# shows that name rather than the image's server program.
_BUILTIN_COMMANDS = frozenset({"sleep"})


def _bookinfo(name: str, process_name: str, command: tuple[str, ...], env: dict[str, str]) -> ImageSpec:
    return ImageSpec(
        name=name,
        module=f"{__name__}.{name}",
        process_name=process_name,
        default_command=command,
        env=env,
        ports=(_BOOKINFO_PORT,),
    )


def _ratings(version: str) -> ImageSpec:
    return _bookinfo(
        "ratings",
        "node",
        ("node", "/opt/microservices/ratings.js", str(_BOOKINFO_PORT)),
        {"SERVICE_VERSION": version},
    )


def _reviews(version: str, enable_ratings: bool, star_color: str) -> ImageSpec:
    env = {
        "SERVICE_VERSION": version,
        "ENABLE_RATINGS": str(enable_ratings).lower(),
        "STAR_COLOR": star_color,
    }
    return _bookinfo("reviews", "java", ("/opt/ol/wlp/bin/server", "run", "defaultServer"), env)


# Keyed by the last component of the repository path (``examples-bookinfo-<service>-<version>``); the registry
# host and namespace in front of it vary between releases (docker.io/istio, registry.istio.io/release).
_BOOKINFO_IMAGES: dict[str, ImageSpec] = {
    "examples-bookinfo-details-v1": _bookinfo(
        "details",
        "ruby",
        ("ruby", "/opt/microservices/details.rb", str(_BOOKINFO_PORT)),
        {"SERVICE_VERSION": "v1"},
    ),
    "examples-bookinfo-ratings-v1": _ratings("v1"),
    "examples-bookinfo-ratings-v-faulty": _ratings("v-faulty"),
    "examples-bookinfo-ratings-v-delayed": _ratings("v-delayed"),
    "examples-bookinfo-ratings-v-unavailable": _ratings("v-unavailable"),
    "examples-bookinfo-ratings-v-unhealthy": _ratings("v-unhealthy"),
    "examples-bookinfo-reviews-v1": _reviews("v1", False, "black"),
    "examples-bookinfo-reviews-v2": _reviews("v2", True, "black"),
    "examples-bookinfo-reviews-v3": _reviews("v3", True, "red"),
    "examples-bookinfo-productpage-v1": _bookinfo(
        "productpage",
        "gunicorn",
        (
            "gunicorn",
            "-b",
            f"[::]:{_BOOKINFO_PORT}",
            "productpage:app",
            "-w",
            "8",
            "--keep-alive",
            "2",
            "-k",
            "gevent",
        ),
        {},
    ),
}

# Keyed by the full repository path (namespace/name): "curl" alone is too common a name to match loosely.
_OTHER_IMAGES: dict[str, ImageSpec] = {
    "curlimages/curl": ImageSpec(
        name="curl",
        module=f"{__name__}.curl",
        process_name="curl",
        default_command=("curl",),
        env={},
        ports=(),
    ),
    # Istio's sidecar (pilot-agent + Envoy in the real image); injected by the API server, never in a manifest.
    "istio/proxyv2": ImageSpec(
        name="istio_proxy",
        module=f"{__name__}.istio_proxy",
        process_name="pilot-agent",
        default_command=("/usr/local/bin/pilot-agent", "proxy", "sidecar"),
        env={},
        ports=(15001, 15020),
    ),
}


def _repository(image: str) -> str:
    """The repository path of an image reference, without registry host, tag or digest.

    ``docker.io/curlimages/curl:8.16.0`` -> ``curlimages/curl``; ``localhost:5000/x/y@sha256:...`` -> ``x/y``.
    """
    ref = image.strip().split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:  # a colon after the last slash starts the tag; one before it is a registry port
        ref = ref[:colon]
    parts = ref.split("/")
    # Docker's rule: the first component is a registry host when it looks like one (has a dot or a port, or is
    # localhost); otherwise the reference is relative to Docker Hub.
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts[:1] == ["library"]:
        parts = parts[1:]
    return "/".join(parts)


def match_image(image: str) -> ImageSpec | None:
    """The spec of a known image, whatever registry, tag or digest the reference carries.

    Args:
        image: An image reference as written in a pod spec, e.g.
            ``registry.istio.io/release/examples-bookinfo-details-v1:1.20.3`` or ``curlimages/curl``.

    Returns:
        A fresh :class:`ImageSpec` (its ``env`` is a copy, safe to modify), or None for an image the sandbox
        cannot run; the kubelet reports that as ``ErrImagePull``.
    """
    repo = _repository(image)
    if not repo:
        return None
    spec = (_OTHER_IMAGES.get(repo) or _OTHER_IMAGES.get(repo.replace("release/", "istio/"))
            or _BOOKINFO_IMAGES.get(repo.rsplit("/", 1)[-1]))
    if spec is None:
        return None
    # A copy, so a caller merging the manifest's env into spec.env cannot change the registry for everyone.
    return dataclasses.replace(spec, env=dict(spec.env))


def process_name_for(spec: ImageSpec, argv: list[str]) -> str:
    """The command name (``comm``) the container's main process shows for this command line.

    Bookinfo images show their server program (``ruby``, ``node``, ``java``, ``gunicorn``) whatever the path
    or arguments, as the real images do. The curl image runs whatever the manifest asks for, so the name is
    the basename of ``argv[0]`` (``/bin/sleep`` -> ``sleep``). In any image, a built-in helper command such as
    ``sleep`` shows its own name.

    Args:
        spec: The image, from :func:`match_image`.
        argv: The container's command line (command + args, or the image default).

    Returns:
        At most 15 characters, the kernel's limit for ``comm``.
    """
    program = os.path.basename(argv[0]) if argv else ""
    runs_its_own = spec.name == "curl" or program in _BUILTIN_COMMANDS
    return ((program or spec.process_name) if runs_its_own else spec.process_name)[:15]
