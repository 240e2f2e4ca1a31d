"""The sandbox's API server: enough of the Kubernetes API for the real kubectl and the official Python client.

HTTPS on 127.0.0.1 with a self-signed certificate and a bearer token. Every path it serves is in one route table,
:meth:`ApiServer.routes`: health and version, discovery and OpenAPI, then for each kind in :mod:`.resources` its
collection, its objects and their subresources (``pods/exec``, ``pods/log``, ``services/proxy``, ``scale``...).
Reads come from the :class:`~.store.Store`, writes go to the :class:`~.registry.Registry`, and exec, logs and
port-forward reach the containers through the :class:`~.kubelet.Kubelet`. Errors leave as ``Status`` objects shaped
like the real API server's, unknown paths and methods included. Query parameters, bodies and objects are checked
by :mod:`.validation` before anything is stored; connections pass the guard of :mod:`.limits`. Who a request is
(the administrator's token, a ServiceAccount's) and whether RBAC lets it through is :mod:`.rbac`'s to say, in
the ``_auth`` middleware, before any handler runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import secrets
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

# protobuf (requests kubectl rarely sends) and the exec toolbox are imported when first needed, not at start-up
from . import containerlog, discovery, dns, limits, portforward, printers, rbac, validation
from .kubelet import Kubelet
from .network import Network
from .params import query_bool
from .patch import apply_patch
from .registry import Registry
from .resources import BY_PLURAL, GROUP_VERSIONS, RESOURCES, REVIEW_KINDS, Resource
from .status import error, status_body
from .store import (
    FieldRequirement,
    Obj,
    Requirement,
    SelectorError,
    Store,
    StoreError,
    not_found,
    parse_field_selector,
    parse_label_selector,
    selector_string,
)
from .wsframes import incoming_bytes

log = logging.getLogger("labkit.sandbox.apiserver")
PODS = BY_PLURAL[("", "pods")]
DEPLOYMENTS = BY_PLURAL[("apps", "deployments")]
REPLICASETS = BY_PLURAL[("apps", "replicasets")]
SERVICES = BY_PLURAL[("", "services")]
NAMESPACES = BY_PLURAL[("", "namespaces")]
SERVICE_ACCOUNTS = BY_PLURAL[("", "serviceaccounts")]
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io")
NOT_FOUND = "the server could not find the requested resource"
SCALE = Resource("scale", "Scale", group="autoscaling")
EXEC_STDIN_LIMIT = 16 * 1024 * 1024
"""Bytes of stdin an exec may buffer for a command that does not read them; beyond, the exec is stopped."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CollectionHandler = Callable[[web.Request, Resource, str | None], Awaitable[web.StreamResponse]]
"""A handler of ``.../<plural>``: the request, the kind and the namespace (None: every namespace)."""
ObjectHandler = Callable[[web.Request, Resource, str, str], Awaitable[web.StreamResponse]]
"""A handler of ``.../<plural>/<name>[/status|/scale]``: the request, the kind, the namespace and the name."""
SubresourceHandler = Callable[[web.Request, str, str], Awaitable[web.StreamResponse]]
"""A handler of one kind's own subresource (``pods/exec``, ``services/proxy``): the namespace and the name."""

# labkit.sandbox.protobuf.CONTENT_TYPE, spelled here so that the codec is imported only for a protobuf request
PROTOBUF_MEDIA_TYPE = "application/vnd.kubernetes.protobuf"


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=dumps(obj), content_type="application/json")


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def include_object(request: web.Request) -> str:
    """What a Table row's ``object`` holds: ``None``, ``Metadata`` (the default) or ``Object`` (``--sort-by``)."""
    value = request.query.get("includeObject") or "Metadata"
    if value not in ("None", "Metadata", "Object"):
        raise StoreError(400, "BadRequest", f'includeObject: Unsupported value: "{value}": supported values: '
                         '"Metadata", "None", "Object"')
    return value


def parse_time(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def resource_prefix(res: Resource) -> str:
    """``/api/v1`` for the core group, ``/apis/<group>/<version>`` for the others."""
    return f"/apis/{res.group_version}" if res.group else "/api/v1"


def as_version(text: str, res: Resource, version: str) -> str:
    """A JSON answer's objects of ``res`` labelled with another served version of its group."""
    return text.replace(f'"apiVersion":"{res.group_version}"', f'"apiVersion":"{res.group}/{version}"')


def at_version(res: Resource, version: str | None, handler: Handler) -> Handler:
    """``handler`` serving ``res`` at another of its versions (the store holds one version; no conversion)."""
    if version is None:
        return handler

    async def served(request: web.Request) -> web.StreamResponse:
        request["served_version"] = version
        response = await handler(request)
        if isinstance(response, web.Response) and response.text is not None:
            response.text = as_version(response.text, res, version)
        return response

    return served


class ApiServer:
    """HTTP handlers over the store (reads), the registry (writes) and the kubelet (exec, logs, port-forward)."""

    def __init__(self, store: Store, registry: Registry, kubelet: Kubelet, network: Network, token: str) -> None:
        self.store = store
        self.registry = registry
        self.kubelet = kubelet
        self.network = network
        self.token = token
        self.auth = rbac.Auth(store, token)
        self.app = web.Application(middlewares=[self._errors, self._auth, self._checked],
                                   client_max_size=validation.MAX_BODY_BYTES)
        self.app.router.add_routes(self.routes())
        self.server_address = "127.0.0.1:6443"
        self.guard = limits.ConnectionGuard()
        self._proxy_session: ClientSession | None = None

    # -- the served API, in one place
    def routes(self) -> list[web.RouteDef]:
        """Every path the API server answers, with its methods and handler."""
        table = [
            web.get("/healthz", self._ok),
            web.get("/livez", self._ok),
            web.get("/readyz", self._ok),
            # The API server answers its discovery paths with or without a trailing slash (kr8s asks /version/).
            *[web.get(path + slash, handler) for path, handler in (
                ("/version", self._version), ("/api", self._discovery), ("/apis", self._discovery),
                ("/api/v1", self._resource_list),
                *[(f"/apis/{gv.split('/')[0]}", self._group) for gv in GROUP_VERSIONS if "/" in gv],
                *[(f"/apis/{gv}", self._resource_list) for gv in GROUP_VERSIONS if "/" in gv],
            ) for slash in ("", "/")],
            web.get("/openapi/v3", self._openapi_root),
            web.get("/openapi/v3/{path:.+}", self._openapi),
        ]
        # Namespaced paths first: /api/v1/namespaces/NS/pods must not be taken for a namespace's subresource.
        for res in sorted(RESOURCES, key=lambda r: not r.namespaced):
            table += self._resource_routes(res)
            for version in res.also_served:  # a CRD's other served versions: the same objects
                table += self._resource_routes(res, version)
        return table

    def _resource_routes(self, res: Resource, version: str | None = None) -> list[web.RouteDef]:
        """One kind's routes: its collection, its objects, their subresources; other methods get a 405 Status.

        With ``version``, the same routes under another served version of the group: objects are read and written
        as they are stored and leave with that version's ``apiVersion``, as a CRD without conversion serves them.
        """
        prefix = resource_prefix(res) if version is None else f"/apis/{res.group}/{version}"
        base = f"{prefix}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"
        item = f"{base}/{{name:[^/]+}}"  # any path segment: RBAC names may hold braces

        def collection(handler: CollectionHandler) -> Handler:
            return at_version(res, version, functools.partial(self._dispatch_collection, handler, res))

        def one(handler: ObjectHandler) -> Handler:
            return at_version(res, version, functools.partial(self._dispatch_object, handler, res))

        def in_object(handler: SubresourceHandler) -> Handler:
            return functools.partial(self._dispatch_subresource, handler)

        not_allowed = functools.partial(self._method_not_allowed, res)
        table: list[web.RouteDef] = []
        if res.namespaced:
            table.append(web.get(f"{prefix}/{res.plural}", collection(self._list)))  # across all namespaces
        table += [
            web.get(base, collection(self._list)),
            web.post(base, collection(self._create)),
            web.delete(base, collection(self._delete_collection)),
            web.route("*", base, not_allowed),
            web.get(item, one(self._get)),
            web.put(item, one(self._replace)),
            web.patch(item, one(self._patch)),
            web.delete(item, one(self._delete)),
            web.route("*", item, not_allowed),
        ]
        if "status" in res.subresources:
            table += [
                web.get(f"{item}/status", one(self._get)),
                web.patch(f"{item}/status", one(self._patch_status)),
                web.put(f"{item}/status", one(self._replace)),
                web.route("*", f"{item}/status", not_allowed),
            ]
        if "scale" in res.subresources:
            table += [
                web.get(f"{item}/scale", one(self._scale)),
                web.patch(f"{item}/scale", one(self._scale)),
                web.put(f"{item}/scale", one(self._scale)),
                web.route("*", f"{item}/scale", not_allowed),
            ]
        if res is PODS:
            table += [
                web.route("*", f"{item}/exec", in_object(self._exec)),  # GET or POST, upgraded to a WebSocket
                web.get(f"{item}/log", in_object(self._log)),
                web.route("*", f"{item}/portforward", in_object(self._portforward)),
            ]
        if res is SERVICE_ACCOUNTS:
            table += [
                web.post(f"{item}/token", in_object(self._token)),
                web.route("*", f"{item}/token", not_allowed),
            ]
        if res is SERVICES:
            table += [
                web.route("*", f"{item}/proxy", in_object(self._proxy)),
                web.route("*", f"{item}/proxy/{{path:.*}}", in_object(self._proxy)),
            ]
        return table

    async def _dispatch_collection(self, handler: CollectionHandler, res: Resource,
                                   request: web.Request) -> web.StreamResponse:
        return await handler(request, res, request.match_info.get("namespace") if res.namespaced else None)

    async def _dispatch_object(self, handler: ObjectHandler, res: Resource,
                               request: web.Request) -> web.StreamResponse:
        ns = request.match_info["namespace"] if res.namespaced else ""
        return await handler(request, res, ns, request.match_info["name"])

    async def _dispatch_subresource(self, handler: SubresourceHandler, request: web.Request) -> web.StreamResponse:
        return await handler(request, request.match_info["namespace"], request.match_info["name"])

    async def _method_not_allowed(self, res: Resource, request: web.Request) -> web.Response:
        return self._not_allowed(request.method, res)

    # -- middlewares
    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/healthz", "/livez", "/readyz", "/version", "/version/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        user = self.auth.authenticate(given)
        if user is None:
            return error(401, "Unauthorized", "Unauthorized")
        self.guard.authenticated(request.transport)
        request["user"] = user
        if not user.is_admin:  # RBAC decides, before any handler (watches, exec, logs, port-forward included)
            self.auth.check(user, rbac.request_attributes(request.method, request.path, request.query))
        return await handler(request)

    @web.middleware
    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Query parameters and body size are checked before any handler runs (service proxy queries pass)."""
        if "/proxy" in request.path:
            return await handler(request)
        length = request.content_length
        if length is not None and length > validation.MAX_BODY_BYTES:
            return error(413, "RequestEntityTooLarge", f"Request entity too large: limit is "
                         f"{validation.MAX_BODY_BYTES}")
        query = validation.parse_query(list(request.query.items()))
        if query.changed:
            request = request.clone(rel_url=request.rel_url.with_query(query.normalised))
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error(413, "RequestEntityTooLarge", f"Request entity too large: limit is "
                         f"{validation.MAX_BODY_BYTES}")

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreError as exc:
            return error(exc.code, exc.reason, exc.message, exc.details)
        except SelectorError as exc:
            return error(400, "BadRequest", str(exc))
        except web.HTTPNotFound:
            return error(404, "NotFound", NOT_FOUND, {})  # the real server's 404 carries empty details
        except web.HTTPMethodNotAllowed:
            return error(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                         "resource", {})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # aiohttp's own answers (a request its router cannot match...) leave as a Status too.
            return error(exc.status, "BadRequest", exc.reason)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the client gets a Status, the log gets the traceback
            log.exception("internal error on %s %s", request.method, request.path)
            if request.get("streaming"):
                raise  # a stream already started: nothing sane can be added to it
            return error(500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {exc}")

    # -- health, version, discovery
    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(discovery.version_info())

    async def _discovery(self, request: web.Request) -> web.Response:
        core = request.path.rstrip("/") == "/api"
        if discovery.wants_aggregated(request.headers.get("Accept")):
            # Aggregated discovery: one answer per request instead of one per group-version.
            return web.Response(text=dumps(discovery.aggregated_discovery(core=core)),
                                headers={"Content-Type": discovery.AGGREGATED_CONTENT_TYPE})
        if core:
            return json_response(discovery.api_versions(self.server_address))
        return json_response(discovery.api_group_list())

    async def _group(self, request: web.Request) -> web.Response:
        name = request.path.split("/")[2]  # /apis/<group>[/]
        return json_response(next(g for g in discovery.api_group_list()["groups"] if g["name"] == name))

    async def _resource_list(self, request: web.Request) -> web.Response:
        path = request.path.rstrip("/")
        return json_response(discovery.resource_list("v1" if path == "/api/v1" else path.removeprefix("/apis/")))

    def _not_allowed(self, method: str, res: Resource) -> web.Response:
        return error(405, "MethodNotAllowed", "the server does not allow this method on the requested resource",
                     {**({"group": res.group} if res.group else {}), "kind": res.plural})

    # -- OpenAPI
    async def _openapi_root(self, request: web.Request) -> web.Response:
        return json_response(discovery.openapi_v3_root())

    async def _openapi(self, request: web.Request) -> web.Response:
        path = request.match_info["path"].removeprefix("api/").removeprefix("apis/")
        doc = discovery.openapi_v3_document(path)
        if doc is None:
            return error(404, "NotFound", NOT_FOUND, {})
        return json_response(doc)

    # -- reads
    def _selectors(self, request: web.Request) -> tuple[list[Requirement], list[FieldRequirement]]:
        return (parse_label_selector(request.query.get("labelSelector")),
                parse_field_selector(request.query.get("fieldSelector")))

    def _table(self, res: Resource, objects: list[Obj], rv: str, include: str = "Metadata") -> Obj:
        return printers.to_table(res, objects, datetime.now(UTC), rv, include)

    async def _list(self, request: web.Request, res: Resource, ns: str | None) -> web.StreamResponse:
        labels, fields = self._selectors(request)
        if query_bool(request.query, "watch"):
            return await self._watch(request, res, ns, labels, fields)
        items = self.store.list(res, ns, labels, fields)
        rv = str(self.store.rv)
        if wants_table(request):
            return json_response(self._table(res, items, rv, include_object(request)))
        return json_response({"kind": res.list_kind, "apiVersion": res.api_version,
                              "metadata": {"resourceVersion": rv}, "items": items})

    async def _get(self, request: web.Request, res: Resource, ns: str, name: str) -> web.Response:
        obj = self.store.require(res, ns, name)
        if wants_table(request):
            return json_response(self._table(res, [obj], obj["metadata"]["resourceVersion"],
                                             include_object(request)))
        return json_response(obj)

    async def _watch(self, request: web.Request, res: Resource, ns: str | None, labels: list[Requirement],
                     fields: list[FieldRequirement]) -> web.StreamResponse:
        q = request.query
        initial = query_bool(q, "sendInitialEvents")
        rv = q.get("resourceVersion")
        since = None if initial or rv in (None, "", "0") else int(rv)
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        as_table = wants_table(request)
        include = include_object(request) if as_table else "Metadata"
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        request["streaming"] = True
        await resp.prepare(request)

        version = request.get("served_version")

        def line(etype: str, obj: Obj) -> bytes:
            if as_table and etype != "BOOKMARK" and etype != "ERROR":
                obj = self._table(res, [obj], obj["metadata"].get("resourceVersion", ""), include)
            text = dumps({"type": etype, "object": obj}) + "\n"
            return (as_version(text, res, version) if version else text).encode()

        try:
            watcher, replay = self.store.watch(res, ns, labels, fields, since)
        except StoreError as exc:
            await resp.write(line("ERROR", status_body(exc.code, exc.reason, exc.message)))
            return resp
        # The deadline arrives as a sentinel in the queue: wait_for(queue.get()) can drop an event that is taken
        # just as the timeout fires (a known asyncio race), and a watch must never lose one.
        timer = asyncio.get_running_loop().call_later(timeout, watcher.queue.put_nowait, None) if timeout else None
        try:
            await resp.write(b"".join(line(ev.type, ev.object) for ev in replay))
            if initial:
                await resp.write(line("BOOKMARK", {
                    "kind": res.kind, "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(self.store.rv),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}))
            while True:
                ev = await watcher.queue.get()
                if ev is None:
                    break
                chunk = [line(ev.type, ev.object)]
                while not watcher.queue.empty():
                    nxt = watcher.queue.get_nowait()
                    if nxt is None:
                        await resp.write(b"".join(chunk))
                        return resp
                    chunk.append(line(nxt.type, nxt.object))
                await resp.write(b"".join(chunk))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if timer is not None:
                timer.cancel()
            self.store.unwatch(watcher)
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp

    # -- writes
    async def _body(self, request: web.Request, kind: str | None = None) -> Obj:
        """The decoded body, checked as plain JSON and, given its kind, for the types of the fields read."""
        raw = await request.read()
        if not raw:
            return {}
        if request.content_type.split(";", 1)[0].strip().lower() == PROTOBUF_MEDIA_TYPE:
            from . import protobuf

            body = protobuf.decode_request(raw)
            validation.check_json_value(body)
        else:
            body = validation.decode_body(raw, request.content_type)
        if kind is not None:
            validation.check_types(kind, body)
        return body

    async def _create(self, request: web.Request, res: Resource, ns: str | None) -> web.Response:
        body = await self._body(request, res.kind)
        kind = body.get("kind")
        if kind and kind != res.kind:
            wrong_version = body.get("apiVersion") != res.api_version
            raise validation.bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version "
                f"({res.api_version}) for kind {res.kind}" if wrong_version else
                f"the kind in the data ({kind}) does not match the URL ({res.plural})",
                "apiVersion" if wrong_version else "kind")
        dry = request.query.get("dryRun") == "All"
        user = request.get("user", rbac.ADMIN)
        if res.kind in REVIEW_KINDS and not user.is_admin:
            return json_response(self.auth.review(res, body, user), 201)
        if res.kind not in REVIEW_KINDS:  # a review is answered, never stored: it has no name to check
            validation.validate_object(res.kind, body, namespaced=res.namespaced)
            validation.check_storable(res.kind, body)
            self.auth.check_escalation(user, res, body, ns or "")
        created = self.registry.create(res, body, ns if res.namespaced else None, dry_run=dry)
        return json_response(created, 201)

    async def _replace(self, request: web.Request, res: Resource, ns: str, name: str) -> web.Response:
        body = await self._body(request, res.kind)
        old = self.store.require(res, ns, name)
        given_name = body.get("metadata", {}).get("name")
        if given_name and given_name != name:
            raise validation.bad_request(f"the name of the object ({given_name}) does not match the name on the "
                                         f"URL ({name})", "metadata.name")
        given_rv = body.get("metadata", {}).get("resourceVersion")
        if given_rv and given_rv != old["metadata"]["resourceVersion"]:
            raise StoreError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural}'
                             f'{"." + res.group if res.group else ""} "{name}": the object '
                             "has been modified; please apply your changes to the latest version and try again",
                             {"name": name, **({"group": res.group} if res.group else {}), "kind": res.plural})
        return json_response(self._update(request, res, old, body))

    def _update(self, request: web.Request, res: Resource, old: Obj, new: Obj) -> Obj:
        """Validate the object a PUT or PATCH makes, then store it (or only say what it would be, on a dry run)."""
        new.setdefault("metadata", {}).setdefault("name", old["metadata"]["name"])
        validation.validate_object(res.kind, new, namespaced=res.namespaced)
        validation.check_storable(res.kind, new)
        self.auth.check_escalation(request.get("user", rbac.ADMIN), res, new, old["metadata"].get("namespace", ""))
        return self.registry.update(res, old, new, dry_run=request.query.get("dryRun") == "All")

    async def _patch(self, request: web.Request, res: Resource, ns: str, name: str,
                     status_only: bool = False) -> web.Response:
        raw = await request.read()
        ctype = request.content_type
        patch = validation.decode_body(raw or b"{}", ctype, allow_list=ctype == "application/json-patch+json")
        old = self.store.get(res, ns, name)
        if old is None:
            if ctype == "application/apply-patch+yaml":
                validation.check_types(res.kind, patch)
                patch.setdefault("metadata", {}).setdefault("name", name)
                validation.validate_object(res.kind, patch, namespaced=res.namespaced)
                validation.check_storable(res.kind, patch)
                self.auth.check_escalation(request.get("user", rbac.ADMIN), res, patch, ns)
                return json_response(self.registry.create(res, patch, ns if res.namespaced else None,
                                                          dry_run=request.query.get("dryRun") == "All"), 201)
            raise not_found(res, name)
        new = self._apply_patch(res, old, patch, ctype)
        if status_only:
            return json_response(old)
        return json_response(self._update(request, res, old, new))

    @staticmethod
    def _apply_patch(res: Resource, old: Obj, patch: Any, ctype: str) -> Obj:
        """Apply a decoded patch; what it makes must be an object of the right field types."""
        # The body was decoded and checked once; the patch code gets it back as JSON (apply is a merge patch).
        as_json = "application/merge-patch+json" if "yaml" in ctype else ctype
        try:
            new = apply_patch(old, dumps(patch).encode(), as_json)
        except ValueError as exc:
            code = 422 if "test" in str(exc) else 400
            raise validation.ValidationError(code, "Invalid" if code == 422 else "BadRequest", str(exc), {
                "causes": [{"reason": "FieldValueInvalid", "message": str(exc), "field": "<patch>"}]}) from exc
        except (TypeError, AttributeError, KeyError, IndexError, RecursionError) as exc:
            raise validation.bad_request(f"the patch cannot be applied to {res.kind} "
                                         f'"{old["metadata"]["name"]}": {type(exc).__name__}: {exc}',
                                         "<patch>") from exc
        if not isinstance(new, dict):
            raise validation.bad_request(f"the patch turns {res.kind} \"{old['metadata']['name']}\" into "
                                         "something that is not an object", "<root>")
        validation.check_json_value(new, f"the patched {res.kind}")
        validation.check_types(res.kind, new)
        return new

    async def _patch_status(self, request: web.Request, res: Resource, ns: str, name: str) -> web.Response:
        """A status patch is accepted and ignored: status belongs to the kubelet and the controllers."""
        return await self._patch(request, res, ns, name, status_only=True)

    async def _delete(self, request: web.Request, res: Resource, ns: str, name: str) -> web.Response:
        opts = validation.delete_options(request.query, await self._body(request))
        obj = self.registry.delete(res, ns, name, opts.grace, opts.propagation, dry_run=opts.dry_run)
        if obj.get("kind") in ("Pod", "Deployment", "ReplicaSet", "Service"):
            return json_response(obj)
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": {"name": name, "kind": res.plural, "uid": obj["metadata"]["uid"]}})

    async def _delete_collection(self, request: web.Request, res: Resource, ns: str | None) -> web.Response:
        labels, fields = self._selectors(request)
        opts = validation.delete_options(request.query, await self._body(request))
        items = self.store.list(res, ns, labels, fields)
        gone = []
        for obj in items:
            with contextlib.suppress(StoreError):
                gone.append(self.registry.delete(res, obj["metadata"].get("namespace", ""), obj["metadata"]["name"],
                                                 opts.grace, opts.propagation, dry_run=opts.dry_run))
        return json_response({"kind": res.list_kind, "apiVersion": res.api_version,
                              "metadata": {"resourceVersion": str(self.store.rv)}, "items": gone})

    async def _scale(self, request: web.Request, res: Resource, ns: str, name: str) -> web.Response:
        obj = self.store.require(res, ns, name)
        if request.method in ("PATCH", "PUT"):
            raw = await request.read()
            current = self._scale_obj(obj)
            ctype = request.content_type
            if request.method == "PATCH":
                patch = validation.decode_body(raw or b"{}", ctype, allow_list=ctype == "application/json-patch+json")
                new_scale = self._apply_patch(SCALE, current, patch, ctype)
            else:
                new_scale = validation.decode_body(raw, ctype)
                validation.check_types("Scale", new_scale)
            replicas = (new_scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) \
                    or not 0 <= replicas <= validation.MAX_REPLICAS:
                raise validation.invalid("Scale", name, [validation.invalid_value(
                    "spec.replicas", replicas, f"must be between 0 and {validation.MAX_REPLICAS}, inclusive")])
            if request.query.get("dryRun") == "All":
                return json_response({**current, "spec": {"replicas": replicas}})
            obj = self.registry.mutate(res, ns, name, lambda o: o["spec"].__setitem__("replicas", replicas),
                                       bump_generation=True) or obj
        return json_response(self._scale_obj(obj))

    @staticmethod
    def _scale_obj(obj: Obj) -> Obj:
        meta = obj["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta["uid"],
                             "resourceVersion": meta["resourceVersion"],
                             "creationTimestamp": meta["creationTimestamp"]},
                "spec": {"replicas": int(obj["spec"].get("replicas", 1))},
                "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0)),
                           "selector": selector_string(obj["spec"].get("selector"))}}

    async def _token(self, request: web.Request, ns: str, name: str) -> web.Response:
        """``serviceaccounts/NAME/token``: a TokenRequest answered with a token for the account."""
        body = await self._body(request, "TokenRequest")
        kind = body.get("kind")
        if kind and kind != "TokenRequest":
            raise validation.bad_request(f"the kind in the data ({kind}) does not match the expected kind "
                                         "(TokenRequest)", "kind")
        return json_response(self.auth.token_request(ns, name, body), 201)

    # -- pods: exec and logs
    def _pick_container(self, pod: Obj, requested: str | None) -> str:
        names = [c["name"] for c in pod["spec"]["containers"]]
        if requested:
            if requested not in names:
                raise validation.bad_request(f"container {requested} is not valid for pod "
                                 f"{pod['metadata']['name']}", "container")
            return requested
        default = (pod["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER)
        return str(default) if default in names else str(names[0])

    async def _exec(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        from . import toolbox

        pod = self.store.require(PODS, ns, name)
        q = request.query
        command = q.getall("command", [])
        if not command:
            raise validation.bad_request("you must specify at least 1 command", "command")
        cname = self._pick_container(pod, q.get("container"))
        runtime = self.kubelet.runtime_for(ns, name)
        container = next((c for c in runtime.containers if c.name == cname), None) if runtime else None
        if container is None or container.process is None or container.process.returncode is not None:
            raise validation.bad_request(f'container not found ("{cname}")', "container")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            raise validation.bad_request("Upgrade request required", "Upgrade")
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, autoping=True, heartbeat=None)
        await ws.prepare(request)
        if ws.ws_protocol is None:
            await ws.close(code=1002, message=b"no supported subprotocol")
            return ws
        if not toolbox.has_command(command[0]):
            # containerd fails the exec before any process starts; the kubelet reports it on the error channel
            # and kubectl prints "error: Internal error occurred: ..." (kubectl cp without tar says this too).
            cause = (f"error executing command in container: failed to exec in container: failed to start exec "
                     f'"{secrets.token_hex(32)}": {toolbox.not_found_message(command[0])}')
            failure = {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {cause}",
                       "reason": "InternalError", "details": {"causes": [{"message": cause}]}, "code": 500}
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(b"\x03" + dumps(failure).encode())
                await ws.close(code=1000)
            return ws
        v5 = ws.ws_protocol == "v5.channel.k8s.io"
        tty = query_bool(q, "tty")
        stdin_on = query_bool(q, "stdin")
        stdin: asyncio.Queue[bytes] = asyncio.Queue()
        if not stdin_on:
            stdin.put_nowait(b"")
        send_lock = asyncio.Lock()
        pending = bytearray()
        queued = [0]  # bytes of stdin received and not yet read by the command

        async def send(channel: int, data: bytes) -> None:
            if not data or ws.closed:
                return
            if tty and channel == 1:
                data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            async with send_lock:
                with contextlib.suppress(ConnectionResetError):
                    await ws.send_bytes(bytes([channel]) + data)

        async def read_stdin(n: int = 65536) -> bytes:
            if pending:
                chunk = bytes(pending[:n])
                del pending[:n]
                return chunk
            data = await stdin.get()
            queued[0] -= len(data)
            if not data:
                stdin.put_nowait(b"")  # EOF stays EOF for later reads
                return b""
            if len(data) > n:
                pending.extend(data[n:])
                data = data[:n]
            return data

        ctx = toolbox.ExecContext(
            pod=name, namespace=ns, container=cname, pod_ip=runtime.ip if runtime else "",
            hostname=name, env=dict(container.process_env),
            files=container.files, tty=tty,
            resolver=dns.Resolver(self.network.hosts_file, ns, self.network.pod_network),
            stdin_reader=read_stdin, stdout_writer=lambda b: send(1, b),
            # With a TTY there is one stream, as in a terminal: stderr is written to it, not to channel 2
            # (kubectl discards channel 2 under -t, so error text would vanish).
            stderr_writer=lambda b: send(1 if tty else 2, b),
            process_lister=lambda: self.kubelet.pod_processes(ns, name),
            signaller=lambda proc, sig: self.kubelet.signal_pod_process(ns, name, proc, sig),
        )
        task = asyncio.get_running_loop().create_task(toolbox.run(command, ctx))

        async def reader() -> None:
            async for data in incoming_bytes(ws):
                if not data:
                    continue
                channel, payload = data[0], data[1:]
                if channel == 0 and payload:
                    queued[0] += len(payload)
                    if queued[0] > EXEC_STDIN_LIMIT:  # the command does not read its stdin: a bounded buffer
                        await send(2, f"error: more than {EXEC_STDIN_LIMIT} bytes of stdin left unread\n".encode())
                        task.cancel()
                        break
                    stdin.put_nowait(bytes(payload))
                elif channel == 255 and v5 and payload[:1] == b"\x00":
                    stdin.put_nowait(b"")
            # The client went away: stop the command.
            if not task.done():
                task.cancel()

        read_task = asyncio.get_running_loop().create_task(reader())
        code = 1
        try:
            code = await task
        except asyncio.CancelledError:
            code = 130
        except Exception as exc:  # a toolbox bug: report it as the runtime would, not as a hang
            log.exception("exec %s in %s/%s failed", command, ns, name)
            await send(2, f"error: {exc}\n".encode())
            code = 126
        if not ws.closed:
            if code == 0:
                status: Obj = {"metadata": {}, "status": "Success"}
            else:
                status = {"metadata": {}, "status": "Failure",
                          "message": f"command terminated with non-zero exit code: error executing command "
                                     f"{command}, exit code {code}",
                          "reason": "NonZeroExitCode",
                          "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
            async with send_lock:
                with contextlib.suppress(ConnectionResetError):
                    await ws.send_bytes(b"\x03" + dumps(status).encode())
            with contextlib.suppress(Exception):
                await ws.close(code=1000)
        read_task.cancel()
        return ws

    async def _log(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        pod = self.store.require(PODS, ns, name)
        q = request.query
        names = [c["name"] for c in pod["spec"]["containers"]]
        cname = q.get("container")
        if not cname:
            default = (pod["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER)
            if len(names) > 1 and default not in names:
                raise validation.bad_request(f"a container name must be specified for pod {name}, choose one "
                                 f"of: [{' '.join(names)}]", "container")
            cname = default if default in names else names[0]
        if cname not in names:
            raise validation.bad_request(f"container {cname} is not valid for pod {name}", "container")
        runtime = self.kubelet.runtime_for(ns, name)
        container = next((c for c in runtime.containers if c.name == cname), None) if runtime else None
        if container is None or (container.restart_count == 0 and not container.started
                                 and not container.last_state):
            reason = (container.state.get("waiting") or {}).get("reason", "ContainerCreating") if container \
                else "ContainerCreating"
            raise validation.bad_request(f'container "{cname}" in pod "{name}" is waiting to start: '
                             + ("trying and failing to pull image" if "Image" in reason else reason), "container")
        previous = query_bool(q, "previous")
        if previous:
            if container.restart_count == 0:
                raise validation.bad_request(f'previous terminated container "{cname}" in pod "{name}" not '
                                 "found", "previous")
            path = container.log_path(container.restart_count - 1)
        else:
            path = container.log_path()
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raw = b""
        complete, _ = containerlog.split_complete(raw)
        offset = len(complete)  # a record still being written is read by the follow loop, whole
        since = self._log_since(q)
        stamps = query_bool(q, "timestamps")
        records = containerlog.parse(complete)
        if q.get("tailLines"):  # the kubelet takes the tail first, then skips lines older than since
            n = int(q["tailLines"])
            records = records[-n:] if n > 0 else []
        records = [r for r in records if since is None or self._after(r, since)]
        limit = int(q["limitBytes"]) if q.get("limitBytes") else None

        def render(batch: list[containerlog.Record]) -> bytes:
            return b"".join((r.time.encode() + b" " if stamps else b"") + r.text for r in batch)

        data = render(records)
        if limit is not None:
            data = data[:limit]
        follow = query_bool(q, "follow") and not previous
        if not follow:
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = len(data)
        if data:
            await resp.write(data)
        instance = container.restart_count
        try:
            while limit is None or sent < limit:
                await asyncio.sleep(0.1)
                if os.path.exists(path) and os.path.getsize(path) > offset:
                    with open(path, "rb") as fh:
                        fh.seek(offset)
                        chunk, _ = containerlog.split_complete(fh.read())
                    offset += len(chunk)
                    out = render(containerlog.parse(chunk))
                    if limit is not None:
                        out = out[: limit - sent]
                    sent += len(out)
                    if out:
                        await resp.write(out)
                alive = container.process is not None and container.process.returncode is None
                if (not alive and container.restart_count == instance) or container.restart_count != instance \
                        or container.stopping:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp

    @staticmethod
    def _log_since(q: Any) -> datetime | None:
        """The time ``sinceSeconds`` or ``sinceTime`` asks for (only one may be given), or None."""
        seconds, when = q.get("sinceSeconds"), q.get("sinceTime")
        if seconds and when:
            raise StoreError(422, "Invalid", 'PodLogOptions "" is invalid: []: Forbidden: at most one of '
                             "`sinceTime` or `sinceSeconds` may be specified", {"kind": "PodLogOptions"})
        if seconds:
            try:
                value = int(seconds)
            except ValueError as exc:
                raise StoreError(400, "BadRequest", f'strconv.ParseInt: parsing "{seconds}": invalid syntax'
                                 ) from exc
            if value < 1:
                raise StoreError(422, "Invalid", 'PodLogOptions "" is invalid: sinceSeconds: Invalid value: '
                                 f"{value}: must be greater than 0", {"kind": "PodLogOptions"})
            return datetime.now(UTC) - timedelta(seconds=value)
        if when:
            try:
                return containerlog.parse_stamp(when)
            except ValueError as exc:
                raise StoreError(400, "BadRequest", f'parsing time "{when}" as "2006-01-02T15:04:05Z07:00": '
                                 "cannot parse") from exc
        return None

    @staticmethod
    def _after(record: containerlog.Record, since: datetime) -> bool:
        try:
            return containerlog.parse_stamp(record.time) >= since
        except ValueError:
            return True

    async def _portforward(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        pod = self.store.require(PODS, ns, name)
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or (pod.get("status") or {}).get("phase") != "Running":
            raise validation.bad_request(f"pod {name} is not running, cannot forward ports", "status.phase")
        # Like a kubelet, any port the pod listens on can be forwarded, declared or not.
        request["streaming"] = True
        return await portforward.handle(request, ip, None)

    # -- service proxy
    async def _proxy(self, request: web.Request, ns: str, name_port: str) -> web.StreamResponse:
        return await self._service_proxy(request, ns, name_port, request.match_info.get("path", ""))

    async def _service_proxy(self, request: web.Request, ns: str, name_port: str, path: str) -> web.StreamResponse:
        parts = name_port.split(":")
        if len(parts) == 3:
            parts = parts[1:]
        name, port_ref = parts[0], (parts[1] if len(parts) > 1 else "")
        svc = self.store.require(SERVICES, ns, name)
        ports = svc["spec"].get("ports") or []
        chosen = next((p for p in ports if not port_ref or str(p["port"]) == port_ref or p.get("name") == port_ref),
                      None)
        if chosen is None:
            raise StoreError(503, "ServiceUnavailable", f'no endpoints available for service "{name_port}"')
        backends = self.network.backends(ns, name, int(chosen["port"]))
        if not backends:
            raise StoreError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
        ip, target = random.choice(backends)
        if self._proxy_session is None:
            self._proxy_session = ClientSession(timeout=ClientTimeout(total=30), auto_decompress=False)
        url = f"http://{ip}:{target}/{path}"
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("authorization", "host", "connection", "accept-encoding",
                                        "transfer-encoding", "content-length")}
        try:
            async with self._proxy_session.request(request.method, url, params=request.query,
                                                   data=await request.read() or None, headers=headers,
                                                   allow_redirects=False) as upstream:
                body = await upstream.read()
                out = web.Response(status=upstream.status, body=body)
                for key in ("Content-Type", "Location", "Set-Cookie"):
                    if key in upstream.headers:
                        out.headers[key] = upstream.headers[key]
                return out
        except (TimeoutError, OSError) as exc:
            raise StoreError(503, "ServiceUnavailable", f"error trying to reach service: {exc}") from exc

    async def close(self) -> None:
        if self._proxy_session is not None:
            await self._proxy_session.close()


def make_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
